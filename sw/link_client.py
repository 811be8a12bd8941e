"""Host side of the UART link: a :class:`LinkClient` speaking :mod:`sparsyn.sw.link_protocol` over a
:class:`Transport` (a serial port via pyserial, or a simulator / fake in tests).

Pure Python; pyserial is imported only when a :class:`SerialTransport` is opened.
"""
from __future__ import annotations

import errno
import time
from typing import Protocol

from . import link_protocol as lp
from .errors import SparsynError


class Transport(Protocol):
    """A byte pipe to the board."""

    def write(self, data: bytes) -> None:
        """Send ``data`` (all of it)."""

    def read(self, n: int, timeout_s: float) -> bytes:
        """Up to ``n`` bytes; fewer (maybe none) if ``timeout_s`` passes first."""

    def close(self) -> None:
        """Release the port."""

    # optional: ``monotonic() -> float``, the transport's own clock in seconds (a simulator's time), used for the
    # reply timeouts instead of time.monotonic


_MISSING = {errno.ENOENT, errno.ENODEV, errno.ENXIO}
_DENIED = {errno.EACCES, errno.EPERM}
_BUSY = {errno.EBUSY, errno.EAGAIN}


def _open_error(port: str, err: Exception) -> SparsynError:
    code = getattr(err, "errno", None)
    text = str(err)
    if code in _MISSING or "No such file" in text or "FileNotFoundError" in text:
        return SparsynError(f"serial port {port} does not exist: plug the board in and pass its port "
                            "(Linux: /dev/ttyUSB* or /dev/ttyACM*, macOS: /dev/cu.usbserial-*, Windows: COMn)")
    if code in _DENIED or "Permission denied" in text or "PermissionError" in text:
        return SparsynError(f"no permission to open serial port {port}: add yourself to its group "
                            "(Linux: sudo usermod -aG dialout $USER, then log in again)")
    if code in _BUSY or "busy" in text.lower() or "exclusively lock" in text:
        return SparsynError(f"serial port {port} is in use by another program: close it (screen, minicom, "
                            "another sparsyn, a flashing tool) and retry")
    return SparsynError(f"cannot open serial port {port}: {text}")


class SerialTransport:
    """A serial port through pyserial (8N1, no flow control). pyserial errors become one-line
    :class:`~sparsyn.sw.errors.SparsynError` s naming the fix (missing port, permission, port in use)."""

    def __init__(self, port: str, baud: int, *, serial_module=None):
        if serial_module is None:
            try:
                import serial as serial_module
            except ImportError:
                raise SparsynError("pyserial is not installed: pip install pyserial") from None
        self.port = str(port)
        self._serial = serial_module
        try:
            self._port = serial_module.Serial(self.port, baudrate=int(baud), bytesize=8, parity="N", stopbits=1,
                                              timeout=0.1, write_timeout=5.0)
        except ValueError as err:
            raise SparsynError(f"serial port {self.port} refuses baud {baud}: {err}; use a standard rate "
                               "such as 115200") from None
        except (serial_module.SerialException, OSError) as err:
            raise _open_error(self.port, err) from None

    def write(self, data: bytes) -> None:
        try:
            self._port.write(bytes(data))
            self._port.flush()
        except (self._serial.SerialException, OSError) as err:
            raise SparsynError(f"lost serial port {self.port} while writing ({err}): reconnect the board") from None

    def read(self, n: int, timeout_s: float) -> bytes:
        try:
            self._port.timeout = max(0.0, float(timeout_s))
            return bytes(self._port.read(n))
        except (self._serial.SerialException, OSError) as err:
            raise SparsynError(f"lost serial port {self.port} while reading ({err}): reconnect the board") from None

    def close(self) -> None:
        try:
            self._port.close()
        except (self._serial.SerialException, OSError):
            pass


class LinkClient:
    """Requests to a board running the sparsyn host link.

    Parameters
    ----------
    transport : Transport
        E.g. ``SerialTransport("/dev/ttyUSB1", 115200)``.
    timeout_s : float
        How long to wait for a reply (RUN: ``run_timeout_s``).
    run_timeout_s : float
        How long to wait for a RUN reply (default ``max(timeout_s, 10)``).

    ``garbage_reports`` collects the counts of the board's GARBAGE notifications (bytes it dropped outside
    frames, e.g. line noise while connecting); they are not errors of the request.
    """

    def __init__(self, transport: Transport, timeout_s: float = 1.0, *, run_timeout_s: float | None = None):
        self.transport = transport
        self.timeout_s = float(timeout_s)
        self.run_timeout_s = max(self.timeout_s, 10.0) if run_timeout_s is None else float(run_timeout_s)
        self._decoder = lp.FrameDecoder()
        self._identity: lp.Identity | None = None
        self.garbage_reports: list[int] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.transport.close()

    # ---- one request --------------------------------------------------------------------------------------------
    def request(self, cmd: int, payload: bytes = b"", timeout_s: float | None = None) -> bytes:
        """Send one request, return its OK reply's payload; an ERROR reply, a corrupted reply or none within
        the timeout raise :class:`~sparsyn.sw.errors.SparsynError`."""
        timeout_s = self.timeout_s if timeout_s is None else float(timeout_s)
        name = lp.command_name(cmd)
        self._decoder = lp.FrameDecoder()           # a stale partial frame from an earlier timeout is dropped
        self.transport.write(lp.encode_frame(cmd, payload))
        clock = getattr(self.transport, "monotonic", time.monotonic)
        deadline = clock() + timeout_s
        while True:
            remaining = deadline - clock()
            chunk = self.transport.read(self._decoder.needed(), remaining) if remaining > 0 else b""
            if not chunk:
                if clock() < deadline:
                    continue
                partial = " (an incomplete frame arrived)" if self._decoder.in_frame else ""
                raise SparsynError(f"no reply from the board within {timeout_s:g} s to {name}{partial}: is it "
                                   "flashed with the sparsyn inference bitstream and on this port at this baud?")
            for event in self._decoder.feed(chunk):
                if isinstance(event, lp.BadCrc):
                    raise SparsynError(f"corrupted reply to {name} (bad CRC): check the cable and the baud rate, "
                                       "then retry")
                if not isinstance(event, lp.Frame):
                    continue                        # garbage before a reply: skipped
                if event.cmd == (cmd | lp.REPLY_FLAG):
                    return event.payload
                if event.cmd == lp.ERROR:
                    code, value = event.error()
                    if code == lp.ErrorCode.GARBAGE:
                        self.garbage_reports.append(value)
                        continue
                    label = code.name if isinstance(code, lp.ErrorCode) else f"code {code}"
                    hint = lp.ERROR_HINTS.get(code, "the board runs another link protocol version")
                    raise SparsynError(f"the board refused {name}: {label} (error {int(code)}, value {value}): "
                                       f"{hint}")
                # a reply to an earlier request (e.g. a RUN that timed out here): not ours, skipped

    # ---- commands ---------------------------------------------------------------------------------------------------
    def identify(self) -> lp.Identity:
        """The board's :class:`~sparsyn.sw.link_protocol.Identity` (checked: this protocol version)."""
        ident = lp.decode_identify(self.request(lp.IDENTIFY))
        if ident.version != lp.LINK_VERSION:
            raise SparsynError(f"the board speaks link protocol v{ident.version}, this sparsyn v{lp.LINK_VERSION}: "
                               "flash the board with this sparsyn's bitstream")
        self._identity = ident
        return ident

    @property
    def identity(self) -> lp.Identity:
        return self._identity if self._identity is not None else self.identify()

    def _check_range(self, region_id: int, addr: int, count: int, write: bool) -> lp.Region:
        region = self.identity.region(region_id)
        if write and not region.writable or not write and not region.readable:
            raise SparsynError(f"region {region_id} is not {'writable' if write else 'readable'} on the board: "
                               "use another region (see IDENTIFY)")
        if addr < 0 or count < 0 or addr + count > region.size:
            raise SparsynError(f"bytes {addr} .. {addr + count - 1} are past the end of region {region_id} "
                               f"({region.size} bytes): check the address and the count")
        return region

    def write(self, region: int, addr: int, data: bytes) -> None:
        """Write ``data`` at ``addr`` in ``region``, in frames of at most the board's max payload."""
        data = bytes(data)
        self._check_range(region, addr, len(data), write=True)
        step = self.identity.max_payload - 5
        for off in range(0, len(data), step):
            payload = lp.write_payload(region, addr + off, data[off:off + step])
            if self.request(lp.WRITE, payload):
                raise SparsynError("malformed WRITE reply (a payload): flash this sparsyn's bitstream")

    def read(self, region: int, addr: int, count: int) -> bytes:
        """``count`` bytes from ``addr`` in ``region``, in replies of at most the board's max payload."""
        self._check_range(region, addr, count, write=False)
        step = self.identity.max_payload
        out = bytearray()
        for off in range(0, count, step):
            n = min(step, count - off)
            got = self.request(lp.READ, lp.read_payload(region, addr + off, n))
            if len(got) != n:
                raise SparsynError(f"READ reply with {len(got)} bytes, {n} asked: flash this sparsyn's bitstream")
            out += got
        return bytes(out)

    def run(self, timeout_s: float | None = None) -> int:
        """Start the engine; its cycle count when it is done (waits up to ``run_timeout_s``)."""
        return lp.parse_u32(self.request(lp.RUN, timeout_s=self.run_timeout_s if timeout_s is None else timeout_s),
                            "RUN")

    def cycles(self) -> int:
        """The cycle count of the engine's last run."""
        return lp.parse_u32(self.request(lp.CYCLES), "CYCLES")
