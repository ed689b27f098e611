"""Writing the configuration file (the Connections dialog) and the passwords (the OS keyring).

The file is edited, not regenerated: tomlkit keeps the admin's comments,
ordering and every key the dialog does not know. What would be written is
parsed with ``parse_config`` first, so a mistake is one sentence and the file
on disk stays as it was; the new text replaces the old in one rename.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import tomlkit
from tomlkit.exceptions import TOMLKitError

from .config import APP_NAME, SOURCE_NAMES, Config, ConfigError, default_config_path, keyring_user, parse_config

NO_HOST_SCHEMES = ("sqlite", "sqlite+pysqlite", "mongomock")


@dataclass(frozen=True)
class SourceEntry:
    """One source as the dialog edits it: its URL (with the user in it), and optionally a replica's."""

    url: str
    read_url: str = ""


def split_user(url: str) -> tuple[str, str]:
    """(url without the user, user): ``mysql+pymysql://ann@db/cart`` → (``mysql+pymysql://db/cart``, ``ann``)."""
    if "://" not in url:
        return url, ""
    scheme, rest = url.split("://", 1)
    if scheme.lower() in NO_HOST_SCHEMES:
        return url, ""
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return url, ""
    user, host = netloc.rsplit("@", 1)
    return f"{scheme}://{host}{slash}{path}", unquote(user.split(":", 1)[0])


def with_user(url: str, user: str) -> str:
    """``url`` logging in as ``user`` (replacing the user it names; without ``user``, the one it names)."""
    bare, old = split_user(url.strip())
    user = user.strip() or old
    if not user or "://" not in bare or bare.split("://", 1)[0].lower() in NO_HOST_SCHEMES:
        return bare
    scheme, rest = bare.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}@{rest}"


def save_sources(entries: dict[str, SourceEntry | None], path: Path | None = None) -> Config:
    """Write the sources into the configuration file (made, with its folder, if missing); the result.

    An entry of None (or an empty URL) removes that source. Raises ConfigError with one sentence.
    """
    target = Path(path).expanduser() if path is not None else default_config_path()
    try:
        old = target.read_text(encoding="utf-8") if target.exists() else ""
        doc = tomlkit.parse(old)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{target} cannot be read: {exc}.") from None
    except TOMLKitError as exc:
        raise ConfigError(f"{target} is not valid TOML: {exc}; fix it by hand first.") from None
    sources = doc.get("sources")
    if sources is None:
        sources = tomlkit.table(is_super_table=True)
        doc["sources"] = sources
    for name in SOURCE_NAMES:
        if name not in entries:
            continue
        entry = entries[name]
        if entry is None or not entry.url.strip():
            if name in sources:
                del sources[name]
            continue
        table = sources.get(name)
        if table is None:
            table = tomlkit.table()
            sources[name] = table
        table["url"] = entry.url.strip()
        if entry.read_url.strip():
            table["read_url"] = entry.read_url.strip()
        elif "read_url" in table:
            del table["read_url"]
    text = tomlkit.dumps(doc)
    config = parse_config(tomllib.loads(text), target)   # refuses what the console could not load
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        raise ConfigError(f"The configuration cannot be written to {target}: {exc}.") from None
    return config


def store_password(source: str, password: str | None, replica: bool = False) -> None:
    """The source's password into the OS keyring (service ``notification-console``, user = source,
    or ``<source>.read_url`` for its read replica's own); an empty password removes it. Raises
    ConfigError when the machine has no usable keyring."""
    import keyring
    import keyring.errors
    user = keyring_user(source, replica)
    what = f"{source} read replica" if replica else source
    env = f"NC_{source.upper()}_READ_PASSWORD" if replica else f"NC_{source.upper()}_PASSWORD"
    try:
        if password:
            keyring.set_password(APP_NAME, user, password)
        elif keyring.get_password(APP_NAME, user) is not None:
            keyring.delete_password(APP_NAME, user)
    except keyring.errors.KeyringError as exc:
        raise ConfigError(f"The {what} password cannot be stored in the system keyring ({exc}): install "
                          f"and unlock one (GNOME Keyring, KWallet), or set {env} instead.") from None


def stored_password(source: str, replica: bool = False) -> str | None:
    """The password the keyring holds for ``source`` (or its read replica's own; None if none, or no keyring)."""
    try:
        import keyring
        return keyring.get_password(APP_NAME, keyring_user(source, replica))
    except Exception:  # no keyring backend on this machine: nothing stored
        return None
