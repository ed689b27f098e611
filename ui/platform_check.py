"""Can Qt open a window here? Asked before the QApplication exists.

When Qt cannot load its platform plugin (a missing system library such as
``libxcb-cursor0``) or cannot reach the display, it prints several lines and
aborts the process with a core dump. This module asks the same questions
first, the way Qt will: which platform plugin (``QT_QPA_PLATFORM``, else
wayland on a Wayland session and xcb otherwise), whether its library loads
(the dynamic loader names the first missing library, ``ldd`` all of them),
and whether the X server answers (``xcb_connect``). The answer is one
sentence for the person at the keyboard, or None when the window can open.

Only Linux is checked: on macOS and Windows the wheel carries everything its
platform plugin needs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# Plugin file (without lib prefix and .so) per platform name Qt accepts.
PLUGIN_FILES = {
    "xcb": "qxcb", "wayland": "qwayland", "wayland-egl": "qwayland", "wayland-brcm": "qwayland",
    "offscreen": "qoffscreen", "minimal": "qminimal", "minimalegl": "qminimalegl", "eglfs": "qeglfs",
    "linuxfb": "qlinuxfb", "vnc": "qvnc", "vkkhrdisplay": "qvkkhrdisplay",
}
DISPLAYLESS = {"offscreen", "minimal", "minimalegl", "eglfs", "linuxfb", "vnc", "vkkhrdisplay"}

# The system packages behind each library Qt's xcb and wayland plugins load: (Debian/Ubuntu, Fedora).
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
}
ALTERNATIVES = "use --screenshot FILE.png for a picture of the window, or the command line (python main.py --help)"


def platform_problem(environ: Mapping[str, str] | None = None, system: str | None = None) -> str | None:
    """One sentence saying why Qt could not open a window here, or None when it can."""
    env = os.environ if environ is None else environ
    if (system or sys.platform) != "linux":
        return None
    requested = env.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        names = [part.split(":", 1)[0].strip() for part in requested.split(";") if part.strip()]
    elif env.get("XDG_SESSION_TYPE") == "wayland" and env.get("WAYLAND_DISPLAY"):
        names = ["wayland", "xcb"]       # Qt's own choice on a Wayland session, with its fallback
    else:
        names = ["xcb"]
    if not requested and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("There is no display (DISPLAY and WAYLAND_DISPLAY are unset), so the window cannot open: "
                f"{ALTERNATIVES}.")
    problems = []
    for name in names:
        problem = _problem_of(name, env)
        if problem is None:
            return None
        problems.append(problem)
    # Qt falls back to xcb last: what stopped it is what stops the window.
    return problems[-1]


def plugin_dirs(env: Mapping[str, str]) -> list[Path]:
    """Where Qt looks for platform plugins, in its order."""
    dirs = [Path(p) for p in env.get("QT_QPA_PLATFORM_PLUGIN_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) / "platforms" for p in env.get("QT_PLUGIN_PATH", "").split(os.pathsep) if p]
    try:
        from PySide6.QtCore import QLibraryInfo  # QtCore only: no application is made
        dirs.append(Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms")
    except ImportError:
        pass
    return dirs


def _problem_of(name: str, env: Mapping[str, str]) -> str | None:
    dirs = plugin_dirs(env)
    stem = PLUGIN_FILES.get(name)
    candidates = [d / f"lib{stem}.so" for d in dirs] if stem else []
    found = [c for c in candidates if c.is_file()]
    if not found:
        installed = sorted({n for n, s in PLUGIN_FILES.items() if any((d / f"lib{s}.so").is_file() for d in dirs)})
        return (f"QT_QPA_PLATFORM names the platform '{name}', which no installed Qt platform plugin provides "
                f"(installed: {', '.join(installed) or 'none'}), so the window cannot open: unset it, "
                f"or {ALTERNATIVES}.")
    errors = []
    for plugin in found:
        error = _load_error(plugin)
        if error is None:
            break
        errors.append((plugin, error))
    else:
        plugin, error = errors[0]
        return missing_libraries_sentence(name, _missing_libraries(plugin) or _libraries_named(error, plugin), error)
    if name in DISPLAYLESS:
        return None
    if name == "xcb":
        display = env.get("DISPLAY", "")
        if not display:
            return (f"Qt's xcb platform needs an X display and DISPLAY is unset, so the window cannot open: "
                    f"set DISPLAY, or {ALTERNATIVES}.")
        if not _x_server_answers(display):
            return (f"No X server answers on DISPLAY={display}, so the window cannot open: check DISPLAY "
                    f"(and XAUTHORITY), or {ALTERNATIVES}.")
        return None
    wayland = env.get("WAYLAND_DISPLAY", "")
    if not wayland:
        return (f"Qt's {name} platform needs a Wayland compositor and WAYLAND_DISPLAY is unset, so the window "
                f"cannot open: unset QT_QPA_PLATFORM to use X11, or {ALTERNATIVES}.")
    socket = Path(wayland) if wayland.startswith("/") else Path(env.get("XDG_RUNTIME_DIR", "/nonexistent")) / wayland
    if not socket.exists():
        return (f"No Wayland compositor listens at {socket} (WAYLAND_DISPLAY={wayland}), so the window cannot "
                f"open: check WAYLAND_DISPLAY and XDG_RUNTIME_DIR, or {ALTERNATIVES}.")
    return None


def _load_error(plugin: Path) -> str | None:
    """What the dynamic loader says loading ``plugin``, or None when it loads."""
    try:
        ctypes.CDLL(str(plugin), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        return str(exc)
    return None


def _missing_libraries(plugin: Path) -> list[str]:
    """Every library ``plugin`` needs that the loader cannot find (``ldd``), in its order."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    try:
        out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    missing = [line.split("=>", 1)[0].strip() for line in out.splitlines() if "not found" in line]
    return list(dict.fromkeys(missing))


def _libraries_named(error: str, plugin: Path) -> list[str]:
    """The library a loader message names: ``libxcb-cursor.so.0: cannot open shared object file: …``
    (missing) or ``/lib/x86_64-linux-gnu/libxcb-cursor.so.0: file too short`` (damaged)."""
    first = Path(error.split(":", 1)[0].strip()).name
    return [first] if ".so" in first and first != plugin.name else []


def missing_libraries_sentence(platform: str, libraries: list[str], error: str) -> str:
    """The sentence naming the system packages that bring ``libraries`` (Debian/Ubuntu and Fedora)."""
    if not libraries:
        return (f"Qt's {platform} platform plugin cannot load ({error.strip()}), so the window cannot open: "
                f"install the system packages the README lists for this platform, or {ALTERNATIVES}.")
    debian = list(dict.fromkeys(PACKAGES[lib][0] for lib in libraries if lib in PACKAGES))
    fedora = list(dict.fromkeys(PACKAGES[lib][1] for lib in libraries if lib in PACKAGES))
    unknown = [lib for lib in libraries if lib not in PACKAGES]
    install = []
    if debian:
        install.append(f"Debian/Ubuntu: sudo apt-get install {' '.join(debian)}")
        install.append(f"Fedora: sudo dnf install {' '.join(fedora)}")
    if unknown:
        install.append(f"and the package that provides {', '.join(unknown)}")
    return (f"The window cannot open: Qt's {platform} platform plugin needs system libraries that are missing or damaged here "
            f"({', '.join(libraries)}); install them ({'; '.join(install)}), or {ALTERNATIVES}.")


def _x_server_answers(display: str) -> bool:
    """Whether an X server accepts a connection on ``display`` (the way Qt's xcb plugin connects)."""
    name = ctypes.util.find_library("xcb") or "libxcb.so.1"
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return True  # the plugin loaded, so libxcb is there; let Qt itself say the rest
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        return conn is not None and xcb.xcb_connection_has_error(conn) == 0
    finally:
        if conn is not None:
            xcb.xcb_disconnect(conn)
