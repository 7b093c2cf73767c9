"""Where a command will write, checked before it starts work: a bad output path found after an hour of scoring
would lose the hour. Each check raises ValueError with a message naming the flag and the path."""

import os


def _blocked_by_a_file(path: str) -> str | None:
    """The first existing non-folder on the way to ``path`` (its parents), if any."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent if parent and not os.path.isdir(parent) else None


def check_output_file(path: str | None, flag: str) -> None:
    """``path`` can be written as a file: not a folder, and no file where a folder on its way should be (missing
    folders are made when it is written)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a folder: name the file to write, e.g. {os.path.join(path, 'out.json')}")
    blocker = _blocked_by_a_file(path)
    if blocker:
        raise ValueError(f"{flag} {path}: {blocker} is a file, not a folder")


def check_output_dir(path: str | None, flag: str) -> None:
    """``path`` can be a folder to write into: it is one, or it can be made."""
    if path is None:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} exists and is not a folder: name a folder to write into")
    blocker = _blocked_by_a_file(path)
    if blocker:
        raise ValueError(f"{flag} {path}: {blocker} is a file, not a folder")


def check_new_file(path: str, flag: str, sources: tuple[str, ...] = (), force: bool = False) -> None:
    """``path`` can take a new file that must not silently replace one: never one of ``sources`` (the command
    reads them), and an existing file only with ``force``."""
    check_output_file(path, flag)
    for source in sources:
        if os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
            raise ValueError(f"{flag} {path} is the file this command reads ({source}): write to another file")
    if os.path.exists(path) and not force:
        raise ValueError(f"{path} exists: name a new file, or pass --force to replace it")
