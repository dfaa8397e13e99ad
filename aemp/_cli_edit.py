# The aemp command's configuration commands: set, delete, add and remove
# keys in the file's default section or in a profile, make secrets and
# certificates, and show what a profile comes to.
#
# Each command edits the session's in-memory copy; _cli_base writes it once
# the whole line went through. Values pass the same checks as configure()
# applies, so the file never holds a value a node would refuse.

from __future__ import annotations

import json
import socket
import sys
from typing import Any

from ._cli_base import Command, Failure, Session, Usage, checked, configure_args, need_str
from ._config import file_origin, full_config, resolve, resolve_keys
from ._errors import AempError
from ._ids import random_string

G_ID = "identity and trust"
G_LISTS = "seeds, binds and services"
G_PROFILES = "profiles and showing the configuration"
G_LOW = "connection settings"

SECRET_LENGTH = 64  # letters and digits: about 380 bits


def _setter(cmd: str, key: str) -> Any:
    def run(s: Session, args: list[Any]) -> None:
        s.section()[key] = checked(cmd, key, args[0])

    return run


def _deleter(key: str) -> Any:
    def run(s: Session, args: list[Any]) -> None:
        s.section().pop(key, None)

    return run


def _items(cmd: str, key: str, arg: Any) -> list[Any]:
    """What an add/remove command names: one service, or one or more addresses."""
    if key == "services":
        return list(checked(cmd, key, [arg]))
    return list(checked(cmd, key, arg))


def _adder(cmd: str, key: str) -> Any:
    def run(s: Session, args: list[Any]) -> None:
        section = s.section()
        current = section.get(key)
        out = list(current) if isinstance(current, list) else []
        out += [x for x in _items(cmd, key, args[0]) if x not in out]
        section[key] = out

    return run


def _remover(cmd: str, key: str) -> Any:
    def run(s: Session, args: list[Any]) -> None:
        section = s.section()
        current = section.get(key)
        if not isinstance(current, list):
            return
        arg = args[0]
        if key == "services" and isinstance(arg, str):
            # "pkg.mod:func" also removes ["pkg.mod:func", args...]
            gone = [x for x in current if x == arg or (isinstance(x, list) and x[:1] == [arg])]
        elif key == "services":
            gone = [arg]
        else:
            gone = arg.split(",") if isinstance(arg, str) else arg
            if not isinstance(gone, list):
                raise Usage(f"{cmd}: expected an address or a JSON array (got {json.dumps(arg)})")
        section[key] = [x for x in current if x not in gone]

    return run


def _gensecret(s: Session, args: list[Any]) -> None:
    s.section()["secret"] = random_string(SECRET_LENGTH)


def _gencert(s: Session, args: list[Any]) -> None:
    from .tls import make_certificate

    s.section()["cert"] = make_certificate("aemp")


def _setcert(cmd: str) -> Any:
    def run(s: Session, args: list[Any]) -> None:
        name = need_str(cmd, "FILE", args[0])
        try:
            if name == "-":
                pem = sys.stdin.read()
            else:
                with open(name, encoding="utf-8") as f:
                    pem = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise Usage(f"{cmd}: cannot read {name!r}: {getattr(e, 'strerror', None) or e}") from e
        s.section()["cert"] = checked(cmd, "cert", pem)

    return run


def _profile(s: Session, args: list[Any]) -> None:
    s.target = need_str("profile", "the profile name", args[0])
    s.section()


def _in_profile(cmd: str, s: Session) -> dict[str, Any]:
    if s.target is None:
        raise Usage(f"{cmd} applies to a profile: expected 'aemp profile NAME {cmd} ...'")
    return s.section()


def _setparent(cmd: str) -> Any:
    def run(s: Session, args: list[Any]) -> None:
        section = _in_profile(cmd, s)
        parent = need_str(cmd, "the parent profile", args[0])
        if parent == s.target:
            raise Usage(f"{cmd}: profile {parent!r} cannot be its own parent")
        section["parent"] = parent

    return run


def _delparent(s: Session, args: list[Any]) -> None:
    _in_profile("delparent", s).pop("parent", None)


def _delprofile(s: Session, args: list[Any]) -> None:
    name = need_str("delprofile", "the profile name", args[0])
    s.data.get("profile", {}).pop(name, None)


def _show(s: Session, value: Any) -> None:
    s.out.append(json.dumps(value, indent=2, ensure_ascii=False))


def _showprofile(s: Session, args: list[Any]) -> None:
    name = need_str("showprofile", "the profile name", args[0])
    profiles = s.data.get("profile", {})
    if name not in profiles:
        known = ", ".join(repr(n) for n in profiles) or "none yet"
        raise Usage(f"showprofile: there is no profile {name!r} in {s.path} (profiles: {known})")
    try:
        _show(s, resolve_keys(s.data, name, {}, path=s.path))
    except AempError as e:
        raise Failure(str(e)) from None


def _plain_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _showconfig(s: Session, args: list[Any]) -> None:
    ca = configure_args("showconfig", args)
    profile = ca.profile or s.target or socket.gethostname()
    data = {} if ca.norc else s.data
    try:
        resolved = resolve(data, profile, ca.keys, force=ca.force, path=s.path)
        values = full_config(resolved.keys)
        file = "none (norc)" if ca.norc else file_origin(s.path)
        origin = {key: resolved.origin(key) for key in values}
        shown = {"profile": profile, **values, "file": file, "origin": origin}
        if resolved.overridden:  # what the file replaced of the KEY VALUE pairs
            shown["overridden"] = {
                key: "(a secret)" if key == "secret" else _plain_value(given)
                for key, given, _, _ in resolved.overridden
            }
        _show(s, shown)
    except AempError as e:
        raise Failure(str(e)) from None


_ADDR = "a comma-separated list of host:port or unix:/path, or a JSON array of them"


def _key_commands(
    key: str, meta: str, what: str, note: str, expects: str, group: str, text: str = ""
) -> list[Command]:
    """set<key> (also spelled <key>) and del<key>."""
    set_name = "set" + key
    return [
        Command(
            set_name,
            meta,
            f"set {what}" + (f": {note}" if note else ""),
            _setter(set_name, key),
            group,
            text,
            nargs=1,
            aliases=(key,),
            expects=expects,
        ),
        Command("del" + key, "", f"delete {what} (inherited again)", _deleter(key), group),
    ]


def _list_commands(
    key: str, one: str, meta: str, note: str, expects: str, text: str
) -> list[Command]:
    """set/del for the whole list, add/del for items."""
    add, rem = "add" + one, "del" + one
    what = f"the {key}"
    return [
        *_key_commands(key, meta + "S", what, note, expects, G_LISTS, text),
        Command(add, meta, f"add to {what}", _adder(add, key), G_LISTS, nargs=1, expects=expects),
        Command(
            rem, meta, f"remove from {what}", _remover(rem, key), G_LISTS, nargs=1, expects=expects
        ),
    ]


COMMANDS: list[Command] = [
    *_key_commands(
        "nodeid",
        "ID",
        "the node ID",
        "%n host name, %u random, a trailing / a random suffix",
        "a node ID or template",
        G_ID,
        "Letters, digits and _ - . : / make a node ID. Templates: %n is the host name, "
        "%u a random string, and a trailing / adds a random suffix. Without a node ID "
        "a node started with profile P is called P/<random>.",
    ),
    Command(
        "gensecret",
        "",
        "generate a random shared secret and set it",
        _gensecret,
        G_ID,
        "Nodes authenticate each other with the shared secret (HMAC-SHA3-512), so every "
        "node of a network needs the same one: set it in the default section, or copy it.",
    ),
    *_key_commands("secret", "SECRET", "the shared secret", "", "the secret text", G_ID),
    Command(
        "gencert",
        "",
        "generate a self-signed TLS key and certificate, set cert",
        _gencert,
        G_ID,
        "The PEM text (private key and certificate) goes into the cert key. Nodes that "
        "share it talk TLS and accept each other; like the secret it must be the same on "
        "every node of a network.",
    ),
    Command(
        "setcert",
        "FILE",
        "set cert from a PEM file with key and certificate ('-': stdin)",
        _setcert("setcert"),
        G_ID,
        nargs=1,
        aliases=("cert",),
        expects="a PEM file name",
    ),
    Command("delcert", "", "delete the certificate", _deleter("cert"), G_ID),
    *_key_commands(
        "network",
        "NETWORK",
        "the network id",
        "nodes of other networks are refused",
        "1 to 64 letters, digits and _ . : / -",
        G_ID,
        "Nodes announce their network id when they connect and refuse a node of another "
        "network, or of none when they have one, so that several networks can share hosts "
        "and a node given the wrong network's seed is refused instead of merged.",
    ),
    *_list_commands(
        "seeds",
        "seed",
        "SEED",
        "host:port (or unix:/path on this host) of long-running nodes to join through",
        _ADDR,
        "A node stays connected to its seeds. All seeds of a network should list each "
        "other, so that the network heals after a split.",
    ),
    *_list_commands(
        "binds",
        "bind",
        "BIND",
        "host:port to listen on (* for any host or port), or unix:/path",
        "a comma-separated list of host:port (host or port may be *) or unix:/path, "
        "or a JSON array",
        "A node without binds accepts no connections; it can still connect out. A unix:/path "
        "bind makes a socket file (mode 0600) that nodes on the same host use.",
    ),
    *_list_commands(
        "services",
        "service",
        "SERVICE",
        "called or imported once the node is up",
        "'pkg.mod:func', 'pkg.mod', or a JSON array ['pkg.mod:func', args...]",
        "A service 'pkg.mod:func' is called with no arguments once the node is up, "
        "'[\"pkg.mod:func\", 1, \"x\"]' with those arguments, and 'pkg.mod' is imported. "
        "setservices takes a JSON array of services (or a comma-separated list); "
        "addservice takes one service. delservice 'pkg.mod:func' also removes that "
        "function with arguments.",
    ),
    *_list_commands(
        "discovery",
        "channel",
        "CHANNEL",
        "multicast groups to find peers on, without seeds",
        "'multicast:GROUP:PORT' with options ';interface=IF;ttl=N;interval=S;window=S', "
        "comma-separated, or a JSON array",
        "A node with discovery announces itself on each channel every interval seconds "
        "(default 5) and connects to the nodes of its network it hears there as to seeds. "
        "Announcements are signed with a key made from the secret. ttl defaults to 1 (this "
        "LAN segment); interface is an IPv4 address or an interface name.",
    ),
    Command(
        "profile",
        "NAME",
        "edit profile NAME with the commands that follow",
        _profile,
        G_PROFILES,
        "Without 'profile', commands edit the default section, which every profile "
        "inherits. 'aemp profile seed binds 127.0.0.1:4040' sets binds in profile seed.",
        nargs=1,
        expects="a profile name",
    ),
    Command(
        "setparent",
        "NAME",
        "make profile NAME the parent of the profile being edited",
        _setparent("setparent"),
        G_PROFILES,
        "A profile inherits every key it does not set from its parent, which inherits "
        "from its own parent, and so on up to the default section. Loops are refused.",
        nargs=1,
        aliases=("parent",),
        expects="a profile name",
    ),
    Command(
        "delparent", "", "the profile being edited has no parent any more", _delparent, G_PROFILES
    ),
    Command(
        "delprofile",
        "NAME",
        "delete profile NAME",
        _delprofile,
        G_PROFILES,
        nargs=1,
        expects="a profile name",
    ),
    Command(
        "showprofile",
        "NAME",
        "print the keys profile NAME gets from the file (JSON)",
        _showprofile,
        G_PROFILES,
        "The default section, the parent chain and the profile layered as configure() "
        "does it, with the node ID a node of that profile would be given.",
        nargs=1,
        expects="a profile name",
    ),
    Command(
        "showconfig",
        "[NAME [KEY VALUE ...]]",
        "print the whole configuration a node would run with (JSON)",
        _showconfig,
        G_PROFILES,
        "What configure(profile=NAME, KEY=VALUE, ...) would start a node with, built-in "
        "defaults included, then the file read and each key's origin: 'default' (built in), "
        "'program' (the KEY VALUE pairs, as configure's arguments), 'default section' or "
        "'profile NAME' (of the file); "
        "'overridden' lists the KEY VALUE pairs the file replaced. "
        "NAME defaults to the profile being edited, else the host name. "
        "Takes the rest of the line; the keys norc and force are understood too.",
        nargs=None,
    ),
]

_LOW_KEYS = {
    "monitor_timeout": (
        "SECONDS",
        "a positive number of seconds",
        "seconds a silent peer is trusted (default 30)",
    ),
    "connect_interval": (
        "SECONDS",
        "a positive number of seconds",
        "seconds a connection attempt may take (default 2)",
    ),
    "framing_format": (
        "FORMATS",
        "msgpack and/or json, comma-separated",
        "framings offered, preferred first",
    ),
    "auth_offer": (
        "METHODS",
        "some of tls_sha3_512, hmac_sha3_512, tls_anon, cleartext",
        "authentication methods this node uses",
    ),
    "auth_accept": (
        "METHODS",
        "some of tls_sha3_512, hmac_sha3_512, tls_anon, cleartext",
        "authentication methods this node accepts",
    ),
    "nodelay": ("BOOL", "true or false", "TCP_NODELAY on connections (default true)"),
    "secure": ("BOOL", "true or false", "refuse spawn requests of other nodes (default false)"),
    "spawn_allow": (
        "TARGETS",
        "a comma-separated list of 'pkg.mod:func', 'pkg.mod:*' or '*', or a JSON array",
        "functions other nodes may spawn besides @aemp.spawnable ones (default none)",
    ),
    "max_packet": (
        "BYTES",
        "a number of bytes of at least 1024",
        "largest packet accepted (default 64 MiB)",
    ),
    "blocking_threads": (
        "N",
        "an int from 1 to 1024",
        "threads for aemp.blocking work (default 8)",
    ),
    "queue_limit": (
        "COUNT",
        "an int from 100 to 2**30",
        "messages held before reading from links pauses (default 10000)",
    ),
    "send_buffer": (
        "BYTES",
        "a number of bytes of at least 65536",
        "unsent bytes per link past which drain() waits (default 4 MiB)",
    ),
    "max_unsent": (
        "BYTES",
        "a number of bytes of at least 65536",
        "unsent bytes per link past which the link fails (default 256 MiB)",
    ),
    "stream_buffer": (
        "BYTES",
        "a number of bytes of at least 65536",
        "bytes a data stream buffers each way before it waits (default 1 MiB)",
    ),
    "stall_timeout": (
        "SECONDS",
        "a positive number of seconds",
        "seconds a peer may take none of our bytes (default 60)",
    ),
    "handshake_timeout": (
        "SECONDS",
        "a number of seconds from 0.1 to 86400",
        "seconds from connect to authentication (default 5)",
    ),
    "max_handshakes": (
        "COUNT",
        "an int from 1 to 1000000",
        "connections in their handshake (default 256)",
    ),
    "max_handshakes_per_address": (
        "COUNT",
        "an int from 1 to 1000000",
        "accepted connections in their handshake per address (default 32)",
    ),
    "listen_backlog": (
        "COUNT",
        "an int from 1 to 65535",
        "connections the kernel holds until accepted (default 1024)",
    ),
    "max_objects": (
        "COUNT",
        "a number of at least 1024",
        "most values (elements of lists and dicts at every depth, keys included) in one "
        "packet sent or accepted (default 4194304)",
    ),
    "control": (
        "BOOL",
        "true or false",
        "listen on a control socket for the aemp command on this host (default false; "
        "aemp run: true)",
    ),
    "metrics": (
        "ADDRESS",
        "an address 'host:port' to serve Prometheus metrics on",
        "serve the node's statistics as Prometheus text on http://ADDRESS/metrics (default off)",
    ),
}

_LOW_KEYS["names_url"] = (
    "URL",
    "a URL such as aemp:// or etcd://host:2379",
    "the name-lease backend of 'aemp names' and aemp.names users (default aemp://)",
)

for _key, (_meta, _expects, _note) in _LOW_KEYS.items():
    COMMANDS += _key_commands(_key, _meta, _key, _note, _expects, G_LOW)
