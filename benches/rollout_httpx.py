"""The reference master's push, for benches/rollout.rs to compare against: every host at
once with ``asyncio.gather``, one ``httpx.AsyncClient`` per host over an ``ssl`` context
(master certificate, CA, hostname check), the host's updater pin checked first on a
throwaway connection in a thread, the whole tarball in memory, ``POST /update`` multipart
with ``sha`` and ``sha256``. Prints the wall time in seconds and the hosts updated.

    python3 benches/rollout_httpx.py CA_DIR HOSTS_JSON TARBALL SHA
"""

import asyncio
import hashlib
import json
import socket
import ssl
import sys
import time

import httpx


def context(ca_dir: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(f"{ca_dir}/master/worker.crt", f"{ca_dir}/master/worker.key")
    ctx.load_verify_locations(cafile=f"{ca_dir}/ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    return ctx


def peer_fingerprint(ca_dir: str, address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=10.0) as sock:
        with context(ca_dir).wrap_socket(sock, server_hostname=address) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


async def push_one(ca_dir: str, host: dict, tarball: bytes, sha: str, digest: str) -> bool:
    address, port = host["address"], host["updater_port"]
    actual = await asyncio.to_thread(peer_fingerprint, ca_dir, address, port)
    if actual != host["updater_cert_fingerprint"]:
        return False
    timeout = httpx.Timeout(connect=10.0, read=180.0, write=120.0, pool=5.0)
    async with httpx.AsyncClient(base_url=f"https://{address}:{port}", verify=context(ca_dir),
                                 timeout=timeout) as client:
        answer = await client.post(
            "/update", data={"sha": sha, "sha256": digest},
            files={"tarball": ("tree.tgz", tarball, "application/gzip")})
        return answer.status_code == 200


async def main() -> None:
    ca_dir, hosts_path, tarball_path, sha = sys.argv[1:5]
    hosts = json.load(open(hosts_path))
    began = time.monotonic()
    tarball = open(tarball_path, "rb").read()
    digest = hashlib.sha256(tarball).hexdigest()
    results = await asyncio.gather(*(push_one(ca_dir, h, tarball, sha, digest) for h in hosts))
    print(f"{time.monotonic() - began:.2f} {sum(results)}")


asyncio.run(main())
