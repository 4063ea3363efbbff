"""A small authoritative DNS server on loopback for tests (dnspython on the wire, zone in a dict)."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    """Answers queries from ``zone``: {(name, type): (ttl, [rdata text, ...])}; else NXDOMAIN."""

    def __init__(self) -> None:
        self.zone: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            found = self.zone.get((name, rdtype))
            if found is None:
                if not any(n == name for n, _ in self.zone):
                    response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                ttl, rdatas = found
                response.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", rdtype, rdatas))
            self.sock.sendto(response.to_wire(), addr)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()
