"""`milo install` into a --root tree: golden trees, a second run changes nothing, uninstall undoes it."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node import registry, resources
from node.adapters import units
from node.cli import main
from node.install import daemons
from node.install.plan import Options
from node.install.run import UninstallOptions, install, uninstall
from node.install.system import SIMULATED_STATE, InstallError
from tests.install.tree import check_golden, snapshot

CONFIG_TXT = Path(__file__).parent / "config.txt"
# Pinned, so the golden trees do not move when a branch adds a template or a subsystem: the node's own
# unit and its update step (the polkit rule's two kinds of unit), and the subsystems a full build has
# (the sections of those this one lacks are then written too).
TEMPLATES = ("milo.service", "milo-update@.service")
SUBSYSTEMS = (
    "info",
    "routing",
    "equalizer",
    "volume",
    "radio",
    "player",
    "ui",
    "screen",
    "knob",
    "multiroom",
)
MILO = "/opt/milo/bin/milo"


def pi_root(tmp_path: Path) -> Path:
    """A Raspberry Pi OS file system as install finds it: config.txt, and an asound.conf of someone's."""
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    shutil.copy(CONFIG_TXT, root / "boot/firmware/config.txt")
    (root / "boot/firmware/config.txt").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc/asound.conf").write_text("pcm.!default { type hw card 1 }\n")
    (root / "etc/asound.conf").chmod(0o644)
    for d in (root, root / "boot", root / "boot/firmware", root / "etc"):
        d.chmod(0o755)
    return root


def run_install(root: Path, opts: Options, **kw: object) -> str:
    out = io.StringIO()
    templates = kw.pop("templates", TEMPLATES)
    subsystems = kw.pop("subsystems", SUBSYSTEMS)
    assert install(opts, root=root, templates=templates, subsystems=subsystems, out=out, **kw) == 0  # type: ignore[arg-type]
    return out.getvalue()


def run_uninstall(root: Path, **kw: object) -> str:
    out = io.StringIO()
    assert uninstall(UninstallOptions(**kw), root=root, out=out) == 0  # type: ignore[arg-type]
    return out.getvalue()


MAIN = Options(node_id="living", milo=MILO, dac="hifiberry-dacplus", screen="waveshare-8-dsi")
SATELLITE = Options(node_id="kitchen", milo=MILO, dac="hifiberry-amp", satellite=True, main="living.local")


def test_main_node_tree_matches_golden(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    text = run_install(root, MAIN)
    assert "created  write /etc/milo/milo.toml" in text
    check_golden("main", root)
    # The node restarts itself (every job verb); an update's step, root's, it may only start.
    rule = (root / "etc/polkit-1/rules.d/50-milo.rules").read_text()
    assert 'var units = ["milo.service"];' in rule
    assert 'var startOnly = ["milo-update@milo.service", "milo-update@go-librespot.service"' in rule


def test_satellite_tree_matches_golden(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    run_install(root, SATELLITE)
    check_golden("satellite", root)
    env = (root / "var/lib/milo/snapclient.env").read_text()
    assert "-h living.local --hostID kitchen --soundcard plughw:CARD=sndrpihifiberry,DEV=0" in env
    toml = (root / "etc/milo/milo.toml").read_text()
    assert 'broker = "mqtt://living.local:1883"' in toml
    assert 'only = ["volume", "knob"]' in toml  # no screen on this one
    assert not (root / "etc/asound.conf").is_symlink()  # a satellite renders no asound.conf


@pytest.mark.parametrize("opts", [MAIN, SATELLITE], ids=["main", "satellite"])
def test_a_second_install_changes_nothing(tmp_path: Path, opts: Options) -> None:
    root = pi_root(tmp_path)
    run_install(root, opts)
    first = snapshot(root)
    text = run_install(root, opts)
    second = snapshot(root)
    plan = "var/lib/milo/install/plan.json"
    assert {k: v for k, v in first.items() if k != plan} == {k: v for k, v in second.items() if k != plan}
    steps = [line for line in text.splitlines() if line.startswith(" ")]
    assert steps and all(line.split()[0] == "unchanged" for line in steps), text
    assert "0 changed" in text
    assert json.loads((root / plan).read_text())["commands"] == []


@pytest.mark.parametrize("opts", [MAIN, SATELLITE], ids=["main", "satellite"])
def test_uninstall_leaves_the_tree_as_it_was(tmp_path: Path, opts: Options) -> None:
    root = pi_root(tmp_path)
    before = snapshot(root)
    run_install(root, opts)
    assert (root / "etc/asound.conf").is_symlink() != opts.satellite
    text = run_uninstall(root)
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k != SIMULATED_STATE} == before, text
    state = json.loads((root / SIMULATED_STATE).read_text())
    assert state["users"] == {} and state["enabled"] == []
    # Packages are released, not removed: apt-get autoremove takes them when nothing else needs them.
    assert "alsa-utils" in state["auto"]
    assert "restored  link /etc/asound.conf" in text or opts.satellite


def test_uninstall_keeps_what_the_user_changed(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    run_install(root, MAIN)
    toml = root / "etc/milo/milo.toml"
    toml.write_text(toml.read_text() + "\n[radio]\nallow_private_urls = true\n")
    config_txt = root / "boot/firmware/config.txt"
    config_txt.write_text(config_txt.read_text() + "dtparam=i2c_arm=on\n")
    (root / "var/lib/milo/volume.json").write_text("{}")  # the node's own data
    text = run_uninstall(root)
    assert "kept  file /etc/milo/milo.toml: changed since install" in text
    assert toml.exists()
    assert config_txt.read_text() == CONFIG_TXT.read_text() + "dtparam=i2c_arm=on\n"
    assert (root / "var/lib/milo/volume.json").exists()
    assert "kept  user milo: it owns the data dir that is kept" in text
    assert not (root / "etc/systemd/system/milo.service").exists()
    # Both stay recorded: a later --purge takes the data and the user, also after another install.
    run_install(root, MAIN, force=True)
    run_uninstall(root)
    text = run_uninstall(root, purge=True)
    assert not (root / "var/lib/milo").exists()
    assert "removed  user milo" in text


def test_a_changed_file_is_kept_on_reinstall_unless_forced(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    run_install(root, MAIN)
    toml = root / "etc/milo/milo.toml"
    toml.write_text("node_id = 'mine'\n")
    assert "kept  write /etc/milo/milo.toml: changed since install" in run_install(root, MAIN)
    assert toml.read_text() == "node_id = 'mine'\n"
    assert "updated  write /etc/milo/milo.toml" in run_install(root, MAIN, force=True)
    assert "living" in toml.read_text()


def test_a_new_config_restarts_the_node(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    run_install(root, MAIN)
    text = run_install(root, Options(node_id="living", milo=MILO, dac="allo-boss", screen="waveshare-8-dsi"))
    assert "restarted  units milo.service: their unit file or config changed" in text
    commands = json.loads((root / "var/lib/milo/install/plan.json").read_text())["commands"]
    assert ["systemctl", "try-restart", "milo.service"] in commands
    assert ["systemctl", "daemon-reload"] not in commands  # the unit file itself is the same


def test_other_options_undo_what_is_no_longer_wanted(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    run_install(root, MAIN)
    assert (root / "etc/udev/rules.d/60-milo-backlight.rules").exists()
    text = run_install(root, Options(node_id="living", milo=MILO, dac="hifiberry-dacplus", screen="none"))
    assert not (root / "etc/udev/rules.d/60-milo-backlight.rules").exists()
    assert "no longer part of this install" in text
    assert "vc4-kms-dsi-waveshare-panel" not in (root / "boot/firmware/config.txt").read_text()
    assert "dtoverlay=hifiberry-dacplus" in (root / "boot/firmware/config.txt").read_text()
    run_uninstall(root)
    assert (root / "boot/firmware/config.txt").read_text() == CONFIG_TXT.read_text()


def test_every_template_there_is_installed_by_its_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever templates other branches add: one the table does not name is a main node's daemon.
    folder = tmp_path / "systemd"
    folder.mkdir()
    shutil.copy(resources.data_dir("systemd") / "milo.service.j2", folder)
    (folder / "foo.service.j2").write_text(
        "[Unit]\nDescription=foo\n[Service]\nUser={{ user }}\nExecStart=/bin/true\n"
    )
    (folder / "foo.service.packages").write_text("# what foo needs\nfoo-daemon\n")
    monkeypatch.setattr(units, "data_dir", lambda name: folder)
    monkeypatch.setattr(daemons, "data_dir", lambda name: folder)
    assert units.templates() == ["foo.service", "milo.service"]
    main_root = pi_root(tmp_path / "main")
    run_install(main_root, MAIN, templates=units.templates())
    assert (main_root / "etc/systemd/system/foo.service").read_text().startswith("[Unit]")
    rule = (main_root / "etc/polkit-1/rules.d/50-milo.rules").read_text()
    assert '"foo.service"' in rule and '"milo.service"' in rule  # milo: it restarts itself
    state = json.loads((main_root / SIMULATED_STATE).read_text())
    assert "foo.service" in state["enabled"] and "foo-daemon" in state["packages"]
    sat_root = pi_root(tmp_path / "sat")
    run_install(sat_root, SATELLITE, templates=units.templates())
    assert not (sat_root / "etc/systemd/system/foo.service").exists()


def test_a_daemon_no_package_has_waits_for_its_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        daemons.RULES,
        "milo.service",
        daemons.UnitRule(program="cage", hand_over={"multiroom": {"manage": "systemd"}}),
    )
    root = pi_root(tmp_path)
    text = run_install(root, MAIN)
    assert "note: milo.service: /usr/bin/cage is not there" in text
    assert "manage" not in (root / "etc/milo/milo.toml").read_text()
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/cage").write_text("")
    run_install(root, MAIN)
    assert '[multiroom]\nmanage = "systemd"' in (root / "etc/milo/milo.toml").read_text()
    assert "milo.service" in json.loads((root / SIMULATED_STATE).read_text())["enabled"]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (Options(node_id="x", milo=MILO, user="root"), "never run as root"),
        (Options(node_id="x", milo=MILO, satellite=True), "--main"),
        (Options(node_id="x", milo=MILO, main="h"), "--satellite"),
        (Options(node_id="x", milo=MILO, dac="hifiberry-dac9"), "known are"),
        (Options(node_id="x", milo="/home/pi/venv/bin/milo"), "ProtectHome"),
    ],
)
def test_options_that_cannot_work_are_refused(tmp_path: Path, opts: Options, message: str) -> None:
    with pytest.raises(InstallError, match=message):
        run_install(pi_root(tmp_path), opts)


def test_an_existing_root_user_is_refused(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    (root / SIMULATED_STATE).write_text(json.dumps({"users": {"milo": {"uid": 0, "groups": []}}}))
    with pytest.raises(InstallError, match="is root"):
        run_install(root, MAIN)


def test_a_manifest_naming_other_paths_is_refused(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    run_install(root, MAIN)
    path = root / "var/lib/milo/install/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["entries"]["file:/usr/bin/python3"] = {"kind": "file", "path": "/usr/bin/python3", "sha256": ""}
    path.write_text(json.dumps(manifest))
    with pytest.raises(InstallError, match="no path install writes"):
        run_uninstall(root)


def test_the_cli_renders_a_tree_and_undoes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = pi_root(tmp_path)
    before = snapshot(root)
    args = ["--root", str(root), "--dry-run", "--dac", "iqaudio-dacplus", "--node-id", "den", "--milo", MILO]
    assert main(["install", *args]) == 0
    assert 'card = "IQaudIODAC"' in (root / "etc/milo/milo.toml").read_text()
    plan = json.loads((root / "var/lib/milo/install/plan.json").read_text())
    enable = [c for c in plan["commands"] if c[:3] == ["systemctl", "enable", "--now"]]
    assert len(enable) == 1 and "milo.service" in enable[0], plan["commands"]
    assert any(c[0] == "useradd" and c[-1] == "milo" for c in plan["commands"])
    out = capsys.readouterr().out
    assert "recorded (not run): apt-get install" in out
    assert main(["uninstall", "--root", str(root)]) == 0
    assert {k: v for k, v in snapshot(root).items() if k != SIMULATED_STATE} == before
    assert main(["install", "--root", str(root), "--satellite"]) == 1
    assert "--main" in capsys.readouterr().err


def test_a_root_that_does_not_exist_yet_is_made_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "card" / "rootfs"
    assert main(["install", "--root", str(root), "--node-id", "den", "--milo", MILO]) == 0
    assert (root / "etc/milo/milo.toml").is_file()
    assert main(["uninstall", "--root", str(tmp_path / "nowhere")]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_the_cli_takes_a_satellites_broker_login_from_a_file_never_an_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pi_root(tmp_path)
    secret = tmp_path / "pw"
    secret.write_text("s3cret pw\nignored\n")
    args = ["install", "--root", str(root), "--satellite", "--main", "living.local", "--milo", MILO]
    assert main([*args, "--broker-user", "kitchen", "--broker-password-file", str(secret)]) == 0
    toml = (root / "etc/milo/milo.toml").read_text()
    assert 'broker = "mqtt://kitchen@living.local:1883"' in toml and "s3cret" not in toml
    assert (root / "etc/milo/broker.password").read_text() == "s3cret pw\n"
    plan = (root / "var/lib/milo/install/plan.json").read_text()
    assert '"broker_user": "kitchen"' in plan and "s3cret" not in plan
    assert ["chown", "milo:milo", "/etc/milo/broker.password"] in json.loads(plan)["commands"]
    assert "s3cret" not in capsys.readouterr().out
    # From stdin ('-'), for scripts: a new password replaces the file (and would restart the node).
    monkeypatch.setattr("sys.stdin", io.StringIO("another\n"))
    assert main([*args, "--broker-user", "kitchen", "--broker-password-file", "-"]) == 0
    assert (root / "etc/milo/broker.password").read_text() == "another\n"
    assert "updated  write /etc/milo/broker.password" in capsys.readouterr().out
    # No file and no terminal to type it on; a login for a main node; a password for no user.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main([*args, "--broker-user", "kitchen"]) == 1
    assert "--broker-password-file" in capsys.readouterr().err
    main_args = ["install", "--root", str(root), "--milo", MILO, "--broker-user", "kitchen"]
    assert main([*main_args, "--broker-password-file", str(secret)]) == 1
    assert "add --satellite" in capsys.readouterr().err
    assert main([*args, "--broker-password-file", str(secret)]) == 1
    assert "without --broker-user" in capsys.readouterr().err
    assert main([*args, "--broker-user", "bad name", "--broker-password-file", str(secret)]) == 1
    assert "1-64 of" in capsys.readouterr().err
    assert main(["uninstall", "--root", str(root)]) == 0
    assert not (root / "etc/milo/broker.password").exists()


def test_dry_run_on_this_machine_changes_nothing() -> None:
    if Path("/etc/milo").exists():
        pytest.skip("this machine has an /etc/milo of its own")
    argv = [
        str(Path(sys.executable).parent / "milo"),
        "install",
        "--dry-run",
        "--node-id",
        "dry",
        "--milo",
        MILO,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "would be created  write /etc/milo/milo.toml" in done.stdout
    assert not Path("/etc/milo").exists()


def test_the_registry_subsystems_decide_the_sections(tmp_path: Path) -> None:
    # With this build's own subsystems: a section of one it lacks would stop the node at start.
    root = pi_root(tmp_path)
    run_install(root, MAIN, subsystems=registry.names())
    text = (root / "etc/milo/milo.toml").read_text()
    assert ("[screen]" in text) == ("screen" in registry.names())


@pytest.mark.parametrize(("screen", "fonts"), [("waveshare-8-dsi", True), ("none", False)])
def test_a_node_with_a_screen_gets_the_fonts_its_kiosk_shows_hindi_and_chinese_in(
    tmp_path: Path, screen: str, fonts: bool
) -> None:
    root = pi_root(tmp_path)
    opts = Options(node_id="living", milo=MILO, dac="hifiberry-dacplus", screen=screen)
    run_install(root, opts, templates=("milo.service", "milo-kiosk.service"))
    packages = set(json.loads((root / SIMULATED_STATE).read_text())["packages"])
    assert ({"fonts-noto-core", "fonts-noto-cjk"} <= packages) is fonts
