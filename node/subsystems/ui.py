"""The `ui` subsystem: what every screen of the web UI shares, such as the language it speaks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from node.framework.errors import CommandError
from node.framework.subsystem import Subsystem, SubsystemConfig

# The languages web/i18n/ has a file for, in the order the settings list them.
LANGUAGES = ("en", "fr", "es", "de", "it", "pt", "hi", "zh")
DEFAULT_LANGUAGE = "en"


class UiState(BaseModel):
    """Retained `<base>/ui`: the settings every screen follows."""

    model_config = ConfigDict(extra="forbid")

    language: str = Field(default=DEFAULT_LANGUAGE, description="the UI language, a code of `languages`")
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES), description="languages offered")


class UiData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str = DEFAULT_LANGUAGE


class SetLanguage(BaseModel):
    """`ui/set`: `{"language": "fr"}`, or the plain text `fr`."""

    model_config = ConfigDict(extra="forbid")

    language: str = Field(min_length=2, max_length=10, pattern=r"^[a-z]{2,3}$")


class Ui(Subsystem[UiState, SubsystemConfig]):
    name = "ui"
    description = "settings shared by every screen of the web UI: its language"
    State = UiState
    Data = UiData
    Command = TypeAdapter(SetLanguage)

    data: UiData

    async def setup(self) -> None:
        # A language dropped from a later version falls back to the default rather than failing.
        language = self.data.language if self.data.language in LANGUAGES else DEFAULT_LANGUAGE
        self.state = UiState(language=language)

    def parse_text(self, text: str) -> Any:
        return {"language": text.strip().lower()}

    async def on_command(self, command: Any) -> None:
        language = command.language
        if language not in LANGUAGES:
            raise CommandError(
                "unknown_language", f"no language {language!r}; the languages are: {', '.join(LANGUAGES)}"
            )
        if language != self.data.language:
            self.data = UiData(language=language)
            self.save_data()
        await self.set_state(language=language)
