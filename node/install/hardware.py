"""The DACs and screens `milo install --dac/--screen` knows: ALSA card, mixer, config.txt lines, backlight."""

# Card ids are the names the kernel's ASoC machine drivers register (sound/soc/bcm/*.c), which is what
# `aplay -l` shows in brackets and what hw:CARD=<id> takes; every HiFiBerry overlay registers
# "sndrpihifiberry". A DAC without a hardware volume control has mixer "": the node then has no
# volume control of its own on it (snapclient uses its software mixer on a satellite).

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dac:
    key: str
    label: str
    card: str  # ALSA card id; "" = the router takes the first card with a volume control
    mixer: str  # the playback volume control; "" = none
    overlay: tuple[str, ...] = ()  # lines for /boot/firmware/config.txt
    card_format: str = "S32_LE"


# The Pi's own audio (HDMI, headphones) is turned off under a HAT so that the card list, and what
# "default" means to a program that opens it, is the DAC alone.
_NO_ONBOARD = "dtparam=audio=off"

DACS: dict[str, Dac] = {
    d.key: d
    for d in (
        Dac("auto", "whatever card is there (USB DAC, a laptop): nothing written to config.txt", "", ""),
        Dac(
            "hifiberry-dac",
            "HiFiBerry DAC+ Zero / DAC+ Light / MiniAmp (PCM5102A, no hardware volume)",
            "sndrpihifiberry",
            "",
            ("dtoverlay=hifiberry-dac", _NO_ONBOARD),
        ),
        Dac(
            "hifiberry-dacplus",
            "HiFiBerry DAC+ / DAC+ Pro / DAC2 Pro / Amp2 (PCM512x)",
            "sndrpihifiberry",
            "Digital",
            ("dtoverlay=hifiberry-dacplus", _NO_ONBOARD),
        ),
        Dac(
            "hifiberry-dacplushd",
            "HiFiBerry DAC2 HD (PCM1796)",
            "sndrpihifiberry",
            "DAC",
            ("dtoverlay=hifiberry-dacplushd", _NO_ONBOARD),
        ),
        Dac(
            "hifiberry-amp",
            "HiFiBerry Amp+ (TAS5713)",
            "sndrpihifiberry",
            "Master",
            ("dtoverlay=hifiberry-amp", _NO_ONBOARD),
        ),
        Dac(
            "hifiberry-amp3",
            "HiFiBerry Amp3 (MA12070P)",
            "sndrpihifiberry",
            "Master",
            ("dtoverlay=hifiberry-amp3", _NO_ONBOARD),
        ),
        Dac(
            "hifiberry-amp4pro",
            "HiFiBerry Amp4 Pro (TAS5756M)",
            "sndrpihifiberry",
            "Digital",
            ("dtoverlay=hifiberry-amp4pro", _NO_ONBOARD),
        ),
        Dac(
            "hifiberry-digi",
            "HiFiBerry Digi+ / Digi2 Pro (S/PDIF out, no volume)",
            "sndrpihifiberry",
            "",
            ("dtoverlay=hifiberry-digi", _NO_ONBOARD),
            card_format="S24_LE",
        ),
        Dac(
            "iqaudio-dacplus",
            "IQaudIO / Raspberry Pi DAC+ and DAC Pro (PCM512x)",
            "IQaudIODAC",
            "Digital",
            ("dtoverlay=iqaudio-dacplus", _NO_ONBOARD),
        ),
        Dac(
            "justboom-dac",
            "JustBoom DAC / Amp (PCM512x)",
            "sndrpijustboomd",
            "Digital",
            ("dtoverlay=justboom-dac", _NO_ONBOARD),
        ),
        Dac(
            "allo-boss",
            "Allo Boss DAC (PCM512x)",
            "BossDAC",
            "Digital",
            ("dtoverlay=allo-boss-dac-pcm512x-audio", _NO_ONBOARD),
        ),
        Dac(
            "onboard",
            "the Pi's headphone jack (bcm2835, Pi 4 and older)",
            "Headphones",
            "PCM",
            ("dtparam=audio=on",),
            card_format="S16_LE",
        ),
    )
}


@dataclass(frozen=True)
class Screen:
    key: str
    label: str
    overlay: tuple[str, ...] = ()
    # The screen subsystem's [screen] keys: a name under /sys/class/backlight ("" = the first there),
    # the raw value of 100 % (None = the device's max_brightness) and an inverted PWM.
    backlight: str = ""
    max_brightness: int | None = None
    invert: bool = False
    has_backlight: bool = True  # False: the panel's brightness is its own buttons' business
    kiosk: bool = True
    size: tuple[int, int] = (0, 0)


SCREENS: dict[str, Screen] = {
    s.key: s
    for s in (
        Screen("none", "no display: no kiosk, no backlight", has_backlight=False, kiosk=False),
        # Detected by the firmware (display_auto_detect=1 in Raspberry Pi OS's config.txt).
        Screen("official-7", 'Raspberry Pi Touch Display 7" (DSI, 800x480)', size=(800, 480)),
        Screen(
            "waveshare-7-usb",
            'Waveshare 7" HDMI LCD (C), USB touch, 1024x600',
            # The vendor's mode for the legacy firmware driver; the KMS driver reads the panel's EDID.
            ("hdmi_group=2", "hdmi_mode=87", "hdmi_cvt=1024 600 60 6 0 0 0", "hdmi_drive=1"),
            has_backlight=False,
            size=(1024, 600),
        ),
        Screen(
            "waveshare-8-dsi",
            'Waveshare 8" DSI LCD, 1280x800',
            ("dtoverlay=vc4-kms-dsi-waveshare-panel,8_0_inch",),
            max_brightness=255,
            size=(1280, 800),
        ),
        Screen("hdmi", "an HDMI monitor or TV (no backlight control)", has_backlight=False),
    )
}


def dac_help() -> str:
    return "; ".join(f"{d.key}: {d.label}" for d in DACS.values())


def screen_help() -> str:
    return "; ".join(f"{s.key}: {s.label}" for s in SCREENS.values())
