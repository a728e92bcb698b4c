"""Files a user names, read and written safely: one line for every bad file, never a hang or a memory blow-up.

- What is read must be a regular file: a FIFO blocks a reader forever, /dev/zero never ends, a folder is a
  mistake. Text and JSON are read up to a size cap; JSON nested too deep is "damaged", not a RecursionError.
- Arrays (.npy, .npz members) are read with ``allow_pickle=False`` only. Their header is checked before any
  allocation: an object (pickled) array is refused, and so is an array that declares more bytes than its file
  holds (a truncated file, or a header written to make the reader allocate what is not there). An .npy is
  memory-mapped first, so the header's shape is checked against the file's size by the mapping itself.
- YAML (search spaces) is read up to YAML_MAX_BYTES and composed by a safe loader that counts aliases and nodes:
  a "billion laughs" document (anchors nested under anchors) is refused while it is parsed, before anything
  walks or prints its expansion; a key given twice in one mapping is refused (PyYAML keeps the last silently).
- Images: the pixel count in the header is checked before the image is decoded (a 20000 x 20000 PNG of a few
  hundred kilobytes would otherwise decode into 1.2 GB).
- Outputs are written to a temporary file in the target's folder and renamed onto the target: an existing
  regular file is replaced (its permissions kept), a folder, FIFO or device is refused, and a failed write
  (a read-only place such as /proc, a full disk) leaves neither a partial file nor the temporary one.

Every refusal raises ``error`` (an SSLRayError subclass: the CLI prints it as one line, exit 2).
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import SSLRayError

JSON_MAX_BYTES = 64 * 2 ** 20
"""Cap on a JSON file ssl-ray reads back (summary.json, result.json): the real ones are kilobytes."""
YAML_MAX_BYTES = 2 ** 20
"""Cap on a YAML file ssl-ray reads (a search space is a few hundred bytes)."""
YAML_MAX_ALIASES, YAML_MAX_NODES = 1_000, 100_000
"""Caps while composing YAML: aliases (`*name`) and nodes; real search spaces use a handful of each."""
MAX_IMAGE_PIXELS = 89_478_485
"""Largest image decoded (width x height): PIL's own bound, above which it only warns (Image.MAX_IMAGE_PIXELS)."""


def regular_file(path: str | os.PathLike, what: str = "file", error: type[SSLRayError] = SSLRayError) -> Path:
    """`path` as a Path when it names a regular file (a symbolic link to one counts); else `error`."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{what} {p}: no such file") from None
    except OSError as e:  # a loop of links, a name too long, no permission on a folder above
        raise error(f"{what} {p}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise error(f"{what} {p} is {kind}, not a regular file")
    return p


def read_bytes(path: str | os.PathLike, what: str = "file", limit: int = JSON_MAX_BYTES,
               error: type[SSLRayError] = SSLRayError) -> bytes:
    p = regular_file(path, what, error)
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{what} {p}: cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{what} {p} is larger than {limit // 2 ** 20} MiB; ssl-ray writes such files in kilobytes")
    return data


def read_json(path: str | os.PathLike, what: str = "file", limit: int = JSON_MAX_BYTES,
              error: type[SSLRayError] = SSLRayError, damaged: str = "") -> Any:
    """The JSON document in `path`; `error` "... is damaged (why)<damaged>" when it does not parse."""
    p = Path(path)
    data = read_bytes(p, what, limit, error)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise error(f"{p} is damaged (JSON nested too deeply){damaged}") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{p} is damaged ({str(e).splitlines()[0][:200]}){damaged}") from None


def json_lines(path: str | os.PathLike, what: str = "file", limit: int = JSON_MAX_BYTES) -> list[dict[str, Any]]:
    """The JSON objects of a one-object-per-line file (Tune's result.json); lines that are not objects are
    skipped (a line cut short by a crash)."""
    rows = []
    for line in read_bytes(path, what, limit).decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# ---- arrays ------------------------------------------------------------------------------------------------
def load_yaml(text: str, source: str, error: type[SSLRayError] = SSLRayError) -> Any:
    """The YAML document in `text` through PyYAML's SafeLoader, refused (`error`, naming `source`[:line]) when it
    expands to more than YAML_MAX_NODES nodes (counted with every alias expanded, before anything is built: an
    alias bomb of a few hundred bytes is refused at once), uses more than YAML_MAX_ALIASES aliases, or gives a key
    twice in one mapping. PyYAML's own YAMLError is left to the caller (which reports it with its mark)."""
    import yaml

    class _Checked(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > YAML_MAX_ALIASES:
                    line = self.peek_event().start_mark.line + 1
                    raise error(f"{source}:{line}: more than {YAML_MAX_ALIASES:,} YAML aliases (*name)")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for k, _ in node.value:
                    if k.tag == "tag:yaml.org,2002:merge" or not isinstance(k, yaml.ScalarNode):
                        continue  # `<<: *base` merges; an explicit key may then override a merged one
                    line = k.start_mark.line + 1
                    first = seen.setdefault(self.construct_object(k), line)
                    if first != line:
                        raise error(f"{source}:{line}: key {str(k.value)[:80]!r} given twice in one mapping "
                                    f"(first at line {first}); YAML would keep only the last")
            return super().construct_mapping(node, deep=deep)

    loader = _Checked(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _expanded_size(root, source, error)
            return loader.construct_document(root)
        return None
    finally:
        loader.dispose()


def _expanded_size(root: Any, source: str, error: type[SSLRayError]) -> int:
    """Nodes in the YAML graph `root` with every alias expanded (a shared node counts each time it is used),
    computed once per distinct node; `error` past YAML_MAX_NODES. Iterative: a deep document is no RecursionError."""
    import yaml

    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted: meeting one again is a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        kids = ([c for kv in node.value for c in kv] if isinstance(node, yaml.MappingNode)
                else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not done:
            if id(node) in open_:
                raise error(f"{source}:{node.start_mark.line + 1}: a YAML node that contains itself (an anchor "
                            f"used inside its own value)")
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in kids if id(c) not in size)
            continue
        open_.discard(id(node))
        total = 1 + sum(size.get(id(c), 1) for c in kids)
        if total > YAML_MAX_NODES:
            raise error(f"{source}: expands to more than {YAML_MAX_NODES:,} YAML nodes (aliases of aliases: an "
                        f"alias bomb); a search space has tens")
        size[id(node)] = total
    return size[id(root)]


def read_yaml_text(path: str | os.PathLike, what: str = "YAML file",
                   error: type[SSLRayError] = SSLRayError) -> str:
    """The text of the YAML file `path`: a regular file (not /dev/zero, not a FIFO) of at most YAML_MAX_BYTES,
    UTF-8."""
    p = Path(path)
    data = read_bytes(p, what, YAML_MAX_BYTES, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{p}: not UTF-8 text (byte {e.start}): a {what} is a YAML file") from None


def _check_header(shape: tuple[int, ...], dtype: np.dtype, available: int | None, where: str,
                  error: type[SSLRayError]) -> None:
    if dtype.hasobject:
        raise error(f"{where} holds Python objects (dtype {dtype}): only numeric arrays are read, never unpickled")
    nbytes = math.prod(shape) * dtype.itemsize
    if available is not None and nbytes > available:
        raise error(f"{where} declares shape {shape} of {dtype} ({nbytes:,} bytes) but holds {available:,}: "
                    f"the file is truncated or damaged")


def load_npy(path: str | os.PathLike, what: str = "file", error: type[SSLRayError] = SSLRayError) -> np.ndarray:
    """An .npy array in memory, read through a memory map (the header is checked against the file's size)."""
    p = regular_file(path, what, error)
    try:
        m = np.lib.format.open_memmap(p, mode="r")  # refuses object arrays and a header that overruns the file
        return np.array(m)
    except MemoryError:
        raise error(f"{what} {p}: too large for this machine's memory") from None
    except (ValueError, OSError, EOFError) as e:
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        with open(p, "rb") as f:
            pickled = f.read(1) == b"\x80" or "Python objects" in why  # a pickle's first byte: the PROTO opcode
        raise error(f"{what} {p}: not a readable .npy array ({why})" + (
            "; only numeric arrays written by numpy.save are read, never pickles" if pickled else "")) from None


def load_npz(path: str | os.PathLike, keys: Callable[[list[str]], Iterable[str]], what: str = "file",
             error: type[SSLRayError] = SSLRayError) -> dict[str, np.ndarray]:
    """The arrays `keys(names in the file)` of an .npz, each header checked before its array is read."""
    p = regular_file(path, what, error)
    try:
        with zipfile.ZipFile(p) as z:
            members = {n[:-4]: z.getinfo(n) for n in z.namelist() if n.endswith(".npy")}
            out = {}
            for k in keys(sorted(members)):
                info = members[k]
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    _check_header(shape, dtype, info.file_size - f.tell(), f"{what} {p}: array {k!r}", error)
                with z.open(info) as f:
                    out[k] = np.lib.format.read_array(f, allow_pickle=False)
            return out
    except MemoryError:
        raise error(f"{what} {p}: too large for this machine's memory") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError) as e:
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise error(f"{what} {p}: not a readable .npz archive ({why})") from None


# ---- tables ------------------------------------------------------------------------------------------------
def read_csv(path: str | os.PathLike, what: str = "CSV file", error: type[SSLRayError] = SSLRayError):
    """A CSV file as a pandas DataFrame (its first row names the columns)."""
    import pandas as pd

    p = regular_file(path, what, error)
    try:
        return pd.read_csv(p)
    except MemoryError:
        raise error(f"{what} {p}: too large for this machine's memory") from None
    except (OSError, ValueError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise error(f"{what} {p}: cannot read it as CSV: "
                    f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None


# ---- images ------------------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, mode: str, size: tuple[int, int] | None, what: str = "image",
               error: type[SSLRayError] = SSLRayError) -> np.ndarray:
    """The image in `path` converted to `mode` ("L" or "RGB") and resized (bilinear) to size=(width, height),
    as uint8 (H, W) or (H, W, 3). The pixel count is checked before the image is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    p = regular_file(path, what, error)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as f:
                w, h = f.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise error(f"{what} {p} is {w} x {h} pixels, more than the {MAX_IMAGE_PIXELS:,} ssl-ray decodes "
                                f"(PIL's decompression-bomb bound); shrink it first")
                im = f.convert(mode)
                if size is not None and im.size != size:
                    im = im.resize(size, Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # PIL raises all of these
        raise error(f"{what} {p}: cannot read the image: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
                    ) from None
    except MemoryError:
        raise error(f"{what} {p}: too large to decode in this machine's memory") from None


# ---- outputs -----------------------------------------------------------------------------------------------
def check_output(path: str | os.PathLike, what: str = "--output") -> os.stat_result | None:
    """Refuse an output path that cannot become a file: its folder is missing, or it is a folder, FIFO, device or
    socket. Returns the stat of the existing file it would replace (None when absent). Commands that run for long
    call this before they start, so that the result is not lost at the end."""
    p = Path(path)
    parent = p.absolute().parent
    if not parent.is_dir():
        raise SSLRayError(f"{what} {path}: folder {parent} does not exist")
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SSLRayError(f"{what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder: give a file name" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO or device)"
        raise SSLRayError(f"{what} {path} is {kind}")
    return st


def write_output(path: str | os.PathLike, data: str | bytes | Callable[[str], Any], what: str = "--output") -> Path:
    """Write `data` (text, bytes, or a function writing a file at the path it is given) to `path` atomically.

    An existing regular file is replaced and keeps its permissions; a folder, FIFO, device or socket is refused;
    the folder must exist. A write that fails leaves the target as it was and removes the temporary file."""
    p = Path(path)
    st = check_output(p, what)
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ssl_ray.", suffix=".tmp", dir=p.absolute().parent)
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, bytes):
                f.write(data)
        if callable(data):
            data(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, p)
        tmp = None
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        raise SSLRayError(f"{what} {path}: cannot write there: {write_failure(p.absolute().parent, e)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return p


def write_failure(folder: str | os.PathLike, e: BaseException) -> str:
    """Why a write into `folder` failed, in words: a full disk (or quota) names the disk's mount point and its free
    bytes, the file size limit (`ulimit -f`) its size; else the error's first line. torch.save reports a full disk
    as `RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos ...`, without an errno: then the
    disk and the limit are asked instead."""
    import errno
    import resource
    import shutil

    code = getattr(e, "errno", None)
    mount = Path(folder).absolute()
    while not mount.is_mount() and mount != mount.parent:
        mount = mount.parent
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    disk = f"the disk mounted at {mount}" + (f": {free:,} bytes free" if free is not None else "")
    size = f"the file size limit of this process, ulimit -f: {limit:,} bytes"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"{e.strerror} ({disk})"  # type: ignore[attr-defined]
    if code == errno.EFBIG:
        return f"{e.strerror} ({size})"  # type: ignore[attr-defined]
    if not isinstance(e, OSError):
        if free is not None and free < 2 ** 20:
            return f"No space left on device ({disk})"
        if limit != resource.RLIM_INFINITY:
            return f"File too large ({size})"
    return getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0][:200]


def output_folder(path: str | os.PathLike, what: str = "--output") -> Path:
    """`path` as a folder to write files into, created (with its parents) when absent."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SSLRayError(f"{what} {path} is a file, not a folder: give a folder for the files")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SSLRayError(f"{what} {path}: cannot create the folder: {e.strerror or e}") from None
    return p
