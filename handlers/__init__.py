"""The ordered handler registry: explicit imports, no discovery."""

from __future__ import annotations

from bot.router import Registry
from handlers import (
    admin,
    assistant,
    chat,
    images,
    memory,
    speech,
    tools,
    unusable,
    usage,
    vision,
    voice,
)


def registry() -> Registry:
    """Commands in /help order; message handlers tried in order, chat last."""
    return Registry(
        commands=[admin.help_cmd, admin.start_cmd, admin.reset_cmd, admin.persona_cmd,
                  admin.model_cmd, vision.detail_cmd, images.draw_cmd, images.edit_cmd,
                  images.variation_cmd,
                  voice.translate_cmd, speech.say_cmd, speech.voice_cmd,
                  assistant.code_cmd, assistant.files_cmd, assistant.cancel_cmd,
                  admin.whoami_cmd, chat.image_cmd, chat.audio_cmd, chat.file_cmd,
                  usage.usage_cmd, usage.budget_cmd,
                  tools.json_cmd, tools.seed_cmd, tools.temperature_cmd, tools.info_cmd,
                  memory.search_cmd, memory.forget_cmd],
        messages=[(unusable.wants_unusable, unusable.unusable),
                  (voice.wants_audio, voice.voice_message),
                  (assistant.wants_document, assistant.document),
                  (vision.wants_images, speech.spoken(vision.vision)),
                  (chat.wants_text, assistant.with_workspace(speech.spoken(chat.chat)))],
        passive=chat.record,
    )
