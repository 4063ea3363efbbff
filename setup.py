"""Builds the native extension modules; everything else is declared in pyproject.toml.

sbc.sip._speedups      C-speed SIP header splitting, common-Via splitting and the URI escaping check
                       (pure-Python fallbacks in sbc.sip.message, headers and uri)
sbc.transport._udpio   recvmmsg/sendmmsg for SIP over UDP, with kernel receive timestamps
rtp_relay_ext._relay   the RTP relay engine (C threads + Cython control surface; its kernel fast
                       path, a BPF program compiled here with clang and embedded, when possible)
loadtest.rtp_load._gen the RTP load generator's native sender/receiver
sbc.transport._steer   SIP call steering across workers sharing a UDP port (a BPF program
                       compiled here and embedded; only built where clang and libbpf exist)

and compiles the signalling hot path's pure-Python modules (COMPILED_SOURCES) with Cython as
they are: 17 % fewer instructions per call on the engine benchmark, no source change (a .pxd
beside one, such as sbc/sip/message.pxd, makes its classes extension types). Each source's hash,
with its .pxd (sbc._native.source_digest), goes into sbc/_native_sources.txt; sbc._native imports
a compiled module only while its source still has that hash, so an edited .py or .pxd is never
shadowed by a stale build.
"""

import importlib.util
import os
import shutil
import subprocess
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -O2 for the packet path; -pthread because the engine and generator start threads.
C_FLAGS = ["-O2", "-pthread", "-Wall", "-Wno-unused-function"]
# Set to 1 to build the relay without its io_uring backend even where liburing exists.
NO_IO_URING_ENV = "RTP_RELAY_NO_IO_URING"
# Smallest program that needs liburing's header and library (Debian: liburing-dev); it is
# only compiled and linked, never run.
_LIBURING_PROBE = (
    "#include <liburing.h>\nint main(void) { struct io_uring r; return io_uring_queue_init(2, &r, 0); }\n"
)


def have_liburing() -> bool:
    """True if a C compiler here can compile and link against liburing."""
    if os.environ.get(NO_IO_URING_ENV) == "1":
        return False
    cc = os.environ.get("CC", "cc").split()[0]
    if not shutil.which(cc):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_LIBURING_PROBE)
        result = subprocess.run(
            [cc, src, "-o", os.path.join(tmp, "probe"), "-luring"], capture_output=True, check=False
        )
    return result.returncode == 0


# The relay's io_uring backend (rtp_relay_ext/relay_uring.c) compiles only with liburing;
# without it the engine has the epoll backend alone and a fresh `pip install .` still works.
RELAY_URING = have_liburing()

# Set to 1 to build the relay without its kernel fast path even where clang and libbpf exist.
NO_KFWD_ENV = "RTP_RELAY_NO_KERNEL"
KFWD_SOURCE = "rtp_relay_ext/relay_kfwd.bpf.c"
# Generated: the compiled BPF object as a C array, included by relay_kfwd.c (not tracked).
KFWD_HEADER = "rtp_relay_ext/relay_kfwd_obj.h"
_LIBBPF_PROBE = "#include <bpf/libbpf.h>\nint main(void) { return libbpf_num_possible_cpus() < 0; }\n"


def have_libbpf() -> bool:
    """True if the C compiler here can compile and link against libbpf (Debian: libbpf-dev)."""
    cc = os.environ.get("CC", "cc").split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.c")
        with open(probe, "w") as f:
            f.write(_LIBBPF_PROBE)
        linked = subprocess.run([cc, probe, "-o", os.path.join(tmp, "probe"), "-lbpf"], capture_output=True, check=False)
    return linked.returncode == 0


def build_bpf_object(source: str, header: str, array: str, include_dir: str, what: str, disable_env: str) -> bool:
    """Compile the BPF program `source` with clang and embed it in `header` as `array`; True when that worked.

    Shared by every BPF program built here, so they all need the same tools: clang with the
    BPF target and libbpf's headers and library (Debian: clang, libbpf-dev). Without them,
    or with `disable_env`=1, the caller builds its extension without the program; `what`
    names that feature in the message printed when clang rejects the source.
    """
    if os.environ.get(disable_env) == "1" or not shutil.which("clang"):
        return False
    if not have_libbpf():
        return False
    cc = os.environ.get("CC", "cc").split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "prog.o")
        arch_include = subprocess.run([cc, "-print-multiarch"], capture_output=True, text=True, check=False).stdout.strip()
        compiled = subprocess.run(
            ["clang", "-O2", "-g", "-target", "bpf", "-Wall", f"-I{include_dir}",
             *([f"-I/usr/include/{arch_include}"] if arch_include else []), "-c", source, "-o", obj],
            capture_output=True, text=True, check=False,
        )
        if compiled.returncode != 0:
            print(f"{what} not built: {compiled.stderr.strip()}")
            return False
        with open(obj, "rb") as f:
            data = f.read()
    rows = ",\n".join(",".join(str(b) for b in data[i : i + 16]) for i in range(0, len(data), 16))
    with open(header, "w") as f:
        f.write(f"/* generated by setup.py from {source}: do not edit */\n")
        f.write(f"static const unsigned char {array}[] = {{\n{rows}\n}};\n")
    return True


def build_kfwd_object() -> bool:
    """Compile the relay's BPF program and embed it as KFWD_HEADER; True when that worked.

    Without clang and libbpf the relay is built without its kernel fast path.
    """
    return build_bpf_object(
        KFWD_SOURCE, KFWD_HEADER, "rr_kfwd_obj", "rtp_relay_ext", "relay kernel fast path", NO_KFWD_ENV
    )


# The relay's kernel fast path (rtp_relay_ext/relay_kfwd.*): built where clang and libbpf are.
RELAY_KFWD = build_kfwd_object()

# Set to 1 to build without the SIP call steering even where clang and libbpf exist.
NO_STEER_ENV = "SBC_NO_STEER"
STEER_SOURCE = "sbc/transport/steer.bpf.c"
# Generated: the compiled steering program as a C array, included by _steer.pyx (not tracked).
STEER_HEADER = "sbc/transport/steer_obj.h"
# SIP call steering across workers sharing a UDP port (sbc/transport/steer.bpf.c, _steer.pyx):
# the extension exists only where its program was built; sbc.transport.steering reports that.
STEER = build_bpf_object(
    STEER_SOURCE, STEER_HEADER, "sbc_steer_obj", "sbc/transport", "SIP call steering", NO_STEER_ENV
)

extensions = [
    # The SIP header splitter: the parse benchmark's profile hot spot (see sbc/sip/_speedups.pyx).
    Extension("sbc.sip._speedups", ["sbc/sip/_speedups.pyx"], extra_compile_args=["-O2"]),
    # Batched SIP datagram I/O with kernel receive timestamps (see sbc/transport/_udpio.pyx).
    Extension("sbc.transport._udpio", ["sbc/transport/_udpio.pyx"], extra_compile_args=["-O2"]),
    Extension(
        "rtp_relay_ext._relay",
        [
            "rtp_relay_ext/_relay.pyx",
            "rtp_relay_ext/relay_engine.c",
            "rtp_relay_ext/relay_uring.c",
            "rtp_relay_ext/rtp_stats.c",
            "rtp_relay_ext/relay_kfwd.c",
        ],
        include_dirs=["rtp_relay_ext"],
        define_macros=([("RR_HAVE_IO_URING", "1")] if RELAY_URING else [])
        + ([("RR_HAVE_KFWD", "1")] if RELAY_KFWD else []),
        libraries=(["uring"] if RELAY_URING else []) + (["bpf"] if RELAY_KFWD else []),
        extra_compile_args=C_FLAGS,
        extra_link_args=["-pthread"],
    ),
    Extension(
        "loadtest.rtp_load._gen",
        ["loadtest/rtp_load/_gen.pyx", "loadtest/rtp_load/gen.c"],
        include_dirs=["loadtest/rtp_load"],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-pthread"],
    ),
]
if STEER:
    extensions.append(
        Extension(
            "sbc.transport._steer",
            ["sbc/transport/_steer.pyx"],
            include_dirs=["sbc/transport"],
            # Rebuild when the embedded program changes, not only when the .pyx does.
            depends=[STEER_HEADER],
            libraries=["bpf"],
            extra_compile_args=C_FLAGS,
        )
    )

# The signalling thread's modules, compiled unchanged (Cython's pure-Python mode): the engine
# benchmark's profile is flat over them, so typing one hot spot would not do what compiling all
# of them does (2,495,910 -> 2,055,401 instructions per call). Set SBC_NO_COMPILE=1 to skip.
COMPILED_SOURCES = [
    "sbc/core.py",
    "sbc/sip/message.py",
    "sbc/sip/events.py",
    "sbc/sip/headers.py",
    "sbc/sip/uri.py",
    "sbc/sip/checks.py",
    "sbc/sip/transaction.py",
    "sbc/sip/sdp.py",
    "sbc/b2bua/engine.py",
    "sbc/b2bua/call.py",
    "sbc/media/anchor.py",
    "sbc/media/manager.py",
    "sbc/store/cdr.py",
    "sbc/metrics.py",
    "sbc/transport/udp.py",
]
# Written at build time: "module sha256" per compiled source (read by sbc/_native.py).
NATIVE_MANIFEST = "sbc/_native_sources.txt"
NO_COMPILE_ENV = "SBC_NO_COMPILE"


def _load_native():
    """sbc/_native.py by path (importing the sbc package here would install its import hook):
    its source_digest() is what the manifest must hold for the runtime check to match."""
    spec = importlib.util.spec_from_file_location("_sbc_native_build", "sbc/_native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


source_digest = _load_native().source_digest


compiled = []
if os.environ.get(NO_COMPILE_ENV) != "1":
    compiled = [
        Extension(path[:-3].replace("/", "."), [path], extra_compile_args=["-O2", "-Wno-unused-function"])
        for path in COMPILED_SOURCES
    ]
with open(NATIVE_MANIFEST, "w") as f:
    f.write("# module sha256-of-source-and-pxd, for the compiled copies built with this tree (setup.py)\n")
    for path in COMPILED_SOURCES if compiled else []:
        f.write(f"{path[:-3].replace('/', '.')} {source_digest(path)}\n")


class ParallelBuildExt(build_ext):
    """build_ext compiling extensions in parallel: the compiled sources take minutes one by one."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False})
    + cythonize(compiled, language_level=3, nthreads=os.cpu_count() or 1),
    cmdclass={"build_ext": ParallelBuildExt},
)
