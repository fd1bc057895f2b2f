"""Test certificates made at test time with ``openssl req``: a CA, a server certificate
for the given addresses, a client certificate, and a second CA nobody trusts (with a
server and a client certificate of its own) for the refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Certs:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_ca: str
    rogue_server_cert: str
    rogue_server_key: str
    rogue_client_cert: str
    rogue_client_key: str


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def _run(*args: str, cwd: str) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.strip()}")


def _ca(d: str, name: str) -> None:
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: str, ca: str, name: str, san: str, usage: str) -> None:
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
         f"{name}.key", "-out", f"{name}.csr", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\nextendedKeyUsage={usage}\n"
                "basicConstraints=CA:FALSE\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
         cwd=d)


def make_certs(d: str, addresses: tuple[str, ...] = ("127.0.0.1",),
               names: tuple[str, ...] = ("localhost",)) -> Certs:
    """A CA, a server certificate for ``addresses`` and ``names``, a client
    certificate, and a rogue CA with its own server and client certificates."""
    os.makedirs(d, exist_ok=True)
    san = ",".join([f"IP:{a}" for a in addresses] + [f"DNS:{n}" for n in names])
    _ca(d, "ca")
    _leaf(d, "ca", "server", san, "serverAuth")
    _leaf(d, "ca", "client", "DNS:agent", "clientAuth")
    _ca(d, "rogue")
    _leaf(d, "rogue", "rogue-server", san, "serverAuth")
    _leaf(d, "rogue", "rogue-client", "DNS:agent", "clientAuth")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return Certs(p("ca.pem"), p("server.pem"), p("server.key"), p("client.pem"),
                 p("client.key"), p("rogue.pem"), p("rogue-server.pem"), p("rogue-server.key"),
                 p("rogue-client.pem"), p("rogue-client.key"))
