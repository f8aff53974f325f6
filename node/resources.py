"""The node's data folders (alsa/, web/, ...): node/_data/<name> in the package, found through importlib."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """The directory of the data folder `name` ("alsa", "web").

    In a checkout node/_data/<name> is a committed symlink to the repository's top-level folder, so an
    editable install and the tests read the files being edited; a wheel carries copies (package-data in
    pyproject.toml). Callers hand it to jinja2 and the static file server, which need a real directory.
    """
    found = resources.files("node").joinpath("_data", name)
    if not isinstance(found, Path) or not found.is_dir():
        raise FileNotFoundError(f"milo data folder {name!r} is missing: {found} is not a directory")
    return found.resolve()
