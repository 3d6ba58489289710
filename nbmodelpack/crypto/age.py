"""age: encrypt and decrypt streams (to files, memory, or in-memory files), capped in size.

The plaintext may not exceed the size the manifest records (``mt.PLAIN_SIZE``),
and never the ciphertext's own size (age only adds bytes).

Example:
    >>> plain = decrypt_layer(blob, identity="~/.age/me.txt", filepath="model.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import IO, Any

from .. import paths
from ..errors import CryptoError, IntegrityError
from ..store.streams import CappedWriter
from .keys import IDENTITY_ENV, PASSPHRASE_ENV, Passphrase, find_identities, identity_arg

AGE_CLI_ENV = "NBMODELPACK_AGE_CLI"
# The age command's plaintext is read in pieces this large (the read releases the GIL).
CLI_BLOCK = 1 << 20
# age header: "age-encryption.org/v1\n-> scrypt SALT N\n…": a passphrase-encrypted file.
_SCRYPT_HEADER = b"age-encryption.org/v1\n-> scrypt "


def _is_scrypt(data: bytes) -> bool:
    return data.startswith(_SCRYPT_HEADER)


def encrypt_bytes(data: bytes, *, recipients: Sequence[Any] = (), passphrase: Passphrase | None = None) -> bytes:
    """One standard age file (binary) holding ``data``; what ``age -r``/``age -p`` would write."""
    import pyrage

    if passphrase is not None:
        return bytes(pyrage.passphrase.encrypt(data, passphrase.reveal()))
    out = io.BytesIO()
    # The *_io variants stream in 64 KiB chunks; pyrage.encrypt() on bytes is ~3x slower.
    pyrage.encrypt_io(io.BytesIO(data), out, list(recipients))
    return out.getvalue()


def encrypt_stream(source: IO[bytes], out: IO[bytes], *, recipients: Sequence[Any] = (), passphrase: Passphrase | None = None, limit: int) -> None:
    """Encrypt what ``source`` holds (at most ``limit`` bytes) into ``out`` as one age file, chunk by chunk.

    A passphrase is the exception: pyrage's scrypt mode takes bytes only, so it reads the whole input.

    Example:
        >>> with open("model.safetensors", "rb") as src, open("model.age", "wb") as out:  # doctest: +SKIP
        ...     encrypt_stream(src, out, recipients=[recipient], limit=1 << 30)
    """
    import pyrage

    if passphrase is not None:
        out.write(encrypt_bytes(source.read(limit), passphrase=passphrase))
        return
    cli = cli_encrypts(recipients, passphrase)
    if cli is not None:
        _cli_encrypt(cli, source, out, recipients)
        return
    try:
        pyrage.encrypt_io(source, out, list(recipients))
    except pyrage.EncryptError as exc:  # reading the source failed (pyrage wraps the OSError)
        raise CryptoError(f"cannot encrypt: {exc}", hint="check the store with `modelpack fsck`") from exc


def cli_encrypts(recipients: Sequence[Any], passphrase: Passphrase | None) -> str | None:
    """The ``age`` command, if :func:`encrypt_stream` will use it for these recipients (``age1…`` keys only).

    Example:
        >>> cli_encrypts([], Passphrase("x")) is None
        True
    """
    from pyrage import x25519

    if passphrase is not None or not recipients or not all(isinstance(r, x25519.Recipient) for r in recipients):
        return None
    return age_cli()


def _cli_encrypt(cli: str, source: IO[bytes], out: IO[bytes], recipients: Sequence[Any]) -> None:
    """Encrypt with the ``age`` command: ``source`` on its stdin; its stdout is ``out``'s file when that is empty, else copied in 1 MiB pieces."""
    os.lseek(source.fileno(), 0, os.SEEK_SET)
    direct = _direct_fd(out)
    args = [cli, "--encrypt"] + [part for r in recipients for part in ("-r", str(r))]
    returncode, err = _run_cli(args, source, out.write, direct)
    if direct is not None:
        out.seek(0, os.SEEK_END)  # the child wrote past the writer's position
    if returncode != 0:
        raise CryptoError(f"cannot encrypt: {_cli_error(err, returncode)}")


def _cli_error(err: str, returncode: int) -> str:
    """What the ``age`` command said went wrong: its first ``error:`` line, else its exit status."""
    lines = [line for line in err.splitlines() if "error:" in line] or [f"age exited with {returncode}"]
    return lines[0].split("error:", 1)[-1].strip()


def _run_cli(args: list[str], source: IO[bytes], write: Callable[[bytes], Any], direct: int | None, pass_fds: tuple[int, ...] = ()) -> tuple[int, str]:
    """Run the ``age`` command on ``source``: its output goes to file descriptor ``direct``, else through ``write`` in 1 MiB pieces.

    Returns the exit status and the start of its stderr. If ``write`` raises (a cap),
    the child is killed rather than left blocked on a full pipe.
    """
    proc = subprocess.Popen(args, stdin=source, stdout=subprocess.PIPE if direct is None else direct, stderr=subprocess.PIPE, pass_fds=pass_fds)
    assert proc.stderr is not None
    finished = False
    try:
        while proc.stdout is not None and (block := proc.stdout.read(CLI_BLOCK)):
            write(block)
        finished = True
    finally:
        if not finished:
            proc.kill()
        err = proc.stderr.read(4096).decode("utf-8", "replace")
        if proc.stdout is not None:
            proc.stdout.close()
        proc.stderr.close()
        proc.wait()
    return proc.returncode, err


class _TooLarge(Exception):
    """Raised inside pyrage's write callback when the plaintext passes its cap."""


def _too_large(filepath: str, limit: int) -> IntegrityError:
    return IntegrityError(f"{filepath} decrypts to more than the {limit} bytes its manifest records", hint="the bundle was not written by nbmodelpack; nothing was loaded")


def decrypt_stream(source: IO[bytes], sink: IO[bytes], *, size: int, identity: Any = None, filepath: str, limit: int | None = None) -> None:
    """Decrypt an age file of ``size`` bytes from ``source`` into ``sink``, 8 KiB at a time; errors as :func:`decrypt_layer`.

    At most ``limit`` bytes (and never more than ``size``) reach ``sink``. A
    passphrase-encrypted file is decrypted in memory (pyrage's scrypt mode takes bytes).

    Example:
        >>> with open("model.age", "rb") as src, open(os.memfd_create("m"), "wb") as out:  # doctest: +SKIP
        ...     decrypt_stream(src, out, size=os.fstat(src.fileno()).st_size, filepath="model.safetensors")
    """
    import pyrage

    limit = size if limit is None else min(limit, size)
    head = source.read(len(_SCRYPT_HEADER))
    source.seek(0)
    if _is_scrypt(head):
        sink.write(decrypt_layer(source.read(size), identity=identity, filepath=filepath, limit=limit))
        return
    identities = _recipient_identities(identity, filepath)
    capped = CappedWriter(sink, limit, _TooLarge())
    try:
        cli = age_cli()
        if cli is None or not _cli_decrypt(cli, source, sink, capped, identities):
            pyrage.decrypt_io(source, capped, identities)
    except _TooLarge as exc:
        raise _too_large(filepath, limit) from exc
    except (pyrage.DecryptError, OSError) as exc:
        raise _failed(filepath, exc) from exc


def age_cli() -> str | None:
    """The ``age`` command, if installed and not turned off (``NBMODELPACK_AGE_CLI=0``).

    Large layers are decrypted by it when it can take the identities: the reference
    implementation (Go) needs ~25 % less CPU per byte than pyrage and runs in its own
    process, beside Python's threads (pyrage holds the GIL while it works).

    Example:
        >>> age_cli()  # doctest: +SKIP
        '/usr/bin/age'
    """
    if os.environ.get(AGE_CLI_ENV, "1") == "0":
        return None
    return shutil.which("age")


def _direct_fd(sink: IO[bytes]) -> int | None:
    """The file descriptor of an empty, seekable ``sink`` (a memfd) the child may write itself, else ``None``."""
    try:
        fd = sink.fileno()
        sink.flush()
        empty = sink.tell() == 0 and os.fstat(fd).st_size == 0
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd if empty else None


def _cli_decrypt(cli: str, source: IO[bytes], sink: IO[bytes], capped: CappedWriter, identities: Sequence[Any]) -> bool:
    """Decrypt with the ``age`` command: ciphertext on its stdin, plaintext straight into ``sink``'s file or through ``capped``.

    The identities reach it through a pipe (``-i /dev/fd/N``), never a file. An empty
    in-memory file is handed to the child as its stdout (no copy through Python; age's
    output is never larger than its input, and the cap is checked on the size it wrote);
    anything else reads its stdout in 1 MiB pieces through the cap. Returns ``False``
    (nothing done) when an identity has no text form the CLI reads (ssh, plugins).
    """
    from pyrage import x25519

    if not all(isinstance(i, x25519.Identity) for i in identities):
        return False
    direct = _direct_fd(sink)
    keys = "".join(f"{i}\n" for i in identities).encode()
    # The child reads the blob through the same file offset; the buffered reader's seek(0)
    # after peeking at the header may not have reached the OS.
    os.lseek(source.fileno(), 0, os.SEEK_SET)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, keys)  # a few hundred bytes: fits the pipe's buffer before the child reads
    finally:
        os.close(write_end)
    try:
        returncode, err = _run_cli([cli, "--decrypt", "-i", f"/dev/fd/{read_end}"], source, capped.write, direct, (read_end,))
    finally:
        os.close(read_end)
    if direct is not None and returncode == 0:
        written = os.fstat(direct).st_size
        if written > capped.limit:
            raise _TooLarge
        sink.seek(written)  # the child wrote past the buffered writer's position
    if returncode != 0:
        if "no identity matched" in err:
            raise _decrypt_error("No matching keys")
        raise _decrypt_error(_cli_error(err, returncode))
    return True


def _decrypt_error(message: str) -> Exception:
    """An error the pyrage path would raise for the same failure (one mapping to user errors)."""
    import pyrage

    return pyrage.DecryptError(message)


def decrypt_layer(data: bytes, *, identity: Any = None, filepath: str, limit: int | None = None) -> bytes:
    """Decrypt one age-encrypted layer in memory; wrong key or damaged data → :class:`CryptoError` naming ``filepath``.

    The plaintext may not exceed ``limit`` bytes (default and at most: the ciphertext's size).

    Example:
        >>> plain = decrypt_layer(blob, identity="~/.age/me.txt", filepath="model.safetensors")  # doctest: +SKIP
    """
    import pyrage

    limit = len(data) if limit is None else min(limit, len(data))

    if _is_scrypt(data):
        chosen = [i for i in (identity_arg(identity) if identity is not None else []) if isinstance(i, Passphrase)]
        if not chosen and identity is None and os.environ.get(PASSPHRASE_ENV):
            chosen = [Passphrase(os.environ[PASSPHRASE_ENV])]
        if not chosen:
            raise CryptoError(f"{filepath} is passphrase-encrypted", hint="pass identity=nbmodelpack.Passphrase(...)")
        try:
            # pyrage has no streaming passphrase decrypt; age's plaintext is smaller than its ciphertext.
            plain = bytes(pyrage.passphrase.decrypt(data, chosen[0].reveal()))
        except (pyrage.DecryptError, OSError) as exc:
            if "Decryption failed" in str(exc) or "No matching keys" in str(exc):
                raise CryptoError(f"{filepath}: wrong passphrase", hint="nothing was decrypted") from exc
            raise _damaged(filepath, exc) from exc
        if len(plain) > limit:
            raise _too_large(filepath, limit)
        return plain
    identities = _recipient_identities(identity, filepath)
    out = io.BytesIO()
    try:
        pyrage.decrypt_io(io.BytesIO(data), CappedWriter(out, limit, _TooLarge()), identities)
    except _TooLarge as exc:
        raise _too_large(filepath, limit) from exc
    except (pyrage.DecryptError, OSError) as exc:
        raise _failed(filepath, exc) from exc
    return out.getvalue()


def _recipient_identities(identity: Any, filepath: str) -> list[Any]:
    identities = [i for i in find_identities(identity) if not isinstance(i, Passphrase)]
    if not identities:
        hint = "the layer was encrypted for recipients, not a passphrase" if identity is not None else (
            f"pass identity=FILE, set {IDENTITY_ENV}, or put your identity in {paths.keys_dir()}")
        raise CryptoError(f"{filepath} is encrypted and no age identity was found", hint=hint)
    return identities


def _failed(filepath: str, exc: Exception) -> CryptoError:
    # decrypt_io reports a failed chunk as OSError.
    if "No matching keys" in str(exc):
        return CryptoError(f"{filepath}: none of the given identities can open it", hint="it was encrypted for other recipients; pass the right key: identity=FILE")
    return _damaged(filepath, exc)


def _damaged(filepath: str, exc: Exception) -> CryptoError:
    return CryptoError(f"{filepath}: the ciphertext is damaged or truncated ({exc})", hint="re-pull or re-encrypt it; nothing was decrypted")
