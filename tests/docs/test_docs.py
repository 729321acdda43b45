"""The documentation says what the code does.

- every setting the config parser accepts is in docs/configuration.md and in the man
  page, and every documented setting is accepted (read from proxy/*.c, then confirmed
  with the binary);
- every libconfig snippet in docs/*.md, README.md and the man page passes `strangler -t`;
- every `$ strangler ...` transcript is the binary's real output, conf/*.conf pass -t;
- `strangler -h` and the man page SYNOPSIS name the same subcommands and options;
- the refusals listed in docs/security.md are what the binary answers;
- the man page renders cleanly, names its version, and points at every doc.

Standard library and pytest only. STRANGLER is the binary, STRANGLER_SRC the source
tree (both set by meson; the defaults work from a source checkout)."""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SRC = Path(os.environ.get("STRANGLER_SRC", Path(__file__).resolve().parents[2]))
BINARY = os.environ.get("STRANGLER", str(SRC / "build" / "proxy" / "strangler"))
DOCS = SRC / "docs"
MAN = DOCS / "strangler.8"
CONFIG_MD = DOCS / "configuration.md"
SECURITY_MD = DOCS / "security.md"
RUN_TIMEOUT = 10


def strangler(*args, cwd=SRC, **kw):
    """Runs the binary; fails (never skips) when it is missing."""
    assert os.access(BINARY, os.X_OK), "strangler binary not found at %s (set STRANGLER)" % BINARY
    return subprocess.run([BINARY, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, **kw)


# --------------------------------------------------------------------------------------
# The settings the parser accepts, read from the source
# --------------------------------------------------------------------------------------

# Each `static const char *const NAME[] = {...}` array handed to cfgp_check_keys() is
# the full list of keys one config group accepts. Array names are not unique (most
# loader functions call theirs `keys`), so an array is identified by (file, function,
# name); functions are found by brace matching with string literals and comments
# blanked out.
# Each loader function parses one section (STYLE.md: "module-owned parsing"), which is
# how the dotted path below was chosen; test_key_arrays_are_mapped() double-checks it
# against the path the function itself prints in its messages. A keys array that is not
# in this table, or an entry whose array is gone, fails the tests loudly: extend the
# table when the parser grows a section.
#   [i] = a position in a list, NAME = a backend's name (as in docs/configuration.md)
KEY_ARRAYS = {
    ("config.c", "load", "keys"): "",
    ("config.c", "load_listen", "keys"): "listen.[i]",
    ("config.c", "load_listen_tls", "keys"): "listen.[i].tls",
    ("config.c", "load_listen_tls", "ckeys"): "listen.[i].tls.certificates.[j]",
    ("config.c", "load_backends", "keys"): "backends.NAME",
    ("config.c", "load_server_group", "skeys"): "backends.NAME.servers.[j]",
    ("config.c", "load_health", "hkeys"): "backends.NAME.health",
    ("config.c", "load_retry_budget", "keys"): "backends.NAME.retry_budget",
    ("config.c", "load_queue", "keys"): "backends.NAME.queue",
    ("rewrite.c", "sp_load_path_rewrite", "keys"): "backends.NAME.path_rewrite.[j]",
    # one loader, one keys array, for two sections of the same shape
    ("rewrite.c", "sp_load_hdr_rules", "keys"): ("backends.NAME.request_headers",
                                                 "backends.NAME.response_headers"),
    ("config.c", "load_limits", "tkeys"): "timeouts",
    ("config.c", "load_limits", "lkeys"): "limits",
    ("config.c", "load_shadow_defaults", "keys"): "shadow_defaults",
    ("config.c", "load_admin", "keys"): "admin",
    ("route_conf.c", "load_route", "keys"): "routes.[i]",
    ("route_conf.c", "load_match", "keys"): "routes.[i].match",
    ("route_conf.c", "load_rollout", "keys"): "routes.[i].rollout",
    ("route_conf.c", "load_guard", "keys"): "routes.[i].rollout.guard",
    ("route_conf.c", "load_shadow", "keys"): "routes.[i].shadow",
    ("route_conf.c", "load_shadow", "nkeys"): "routes.[i].shadow.noise",
    ("route_conf.c", "load_compare", "keys"): "routes.[i].shadow.compare",
    ("respond.c", "sp_load_return", "keys"): "routes.[i].return",
    ("route_conf.c", "load_set_cookie", "keys"): "routes.[i].rollout.set_cookie",
}
# every proxy/*.c that checks keys: a new module parsing its own section is seen too
PARSER_FILES = tuple(sorted(p.name for p in (SRC / "proxy").glob("*.c")
                            if "cfgp_check_keys(" in p.read_text()))

ARRAY_RE = re.compile(r"static\s+const\s+char\s*\*\s*const\s+(\w+)\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;",
                      re.S)
FUNC_RE = re.compile(r"^[A-Za-z_][\w \t*]*?\b([A-Za-z_]\w*)\s*\([^;{}]*\)\s*\{", re.M)
CHECK_KEYS_RE = re.compile(r"cfgp_check_keys\s*\(\s*[^,()]+,\s*[^,()]+,\s*([^,]+?)\s*,\s*(\w+)\s*\)")


C_TOKEN_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.S)


def strip_c_comments(text):
    """Comments blanked (same length); "http://" inside a string is not a comment."""
    return C_TOKEN_RE.sub(lambda m: m.group(0) if m.group(0)[0] in "\"'"
                          else re.sub(r"[^\n]", " ", m.group(0)), text)


def mask_literals(text):
    """text with the inside of every string and char literal blanked (same length), so
    that braces in messages such as "must be a group: { ... }" do not count."""
    return re.sub(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'',
                  lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], text)


def c_functions(path):
    """[(name, body)] of the top-level functions of a C file, by brace matching."""
    text = strip_c_comments(path.read_text())
    masked = mask_literals(text)
    out = []
    for m in FUNC_RE.finditer(masked):
        depth, i = 0, m.end() - 1
        while i < len(masked):
            if masked[i] == "{":
                depth += 1
            elif masked[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out.append((m.group(1), text[m.end() - 1:i + 1]))
    return out


def source_key_arrays():
    """{(file, function, array): {"keys": [...], "path_arg": str, "literals": [...]}}"""
    found = {}
    for fname in PARSER_FILES:
        for func, body in c_functions(SRC / "proxy" / fname):
            arrays = {m.group(1): re.findall(r'"([^"]*)"', m.group(2)) for m in ARRAY_RE.finditer(body)}
            for path_arg, arr in CHECK_KEYS_RE.findall(body):
                assert arr in arrays, "%s:%s passes %s to cfgp_check_keys but declares no such " \
                    "array there; teach tests/docs/test_docs.py where it comes from" % (fname, func, arr)
                found[(fname, func, arr)] = {"keys": arrays[arr], "path_arg": path_arg,
                                             "literals": re.findall(r'"([^"]*)"', body)}
            for arr in arrays:
                if arr.endswith("keys") and (fname, func, arr) not in found:
                    found[(fname, func, arr)] = {"keys": arrays[arr], "path_arg": None,
                                                 "literals": []}
    return found


def join(prefix, key):
    return prefix + "." + key if prefix else key


def prefixes(mapped):
    """The sections a keys array checks: one, or a tuple of them."""
    return mapped if isinstance(mapped, tuple) else (mapped,)


def code_settings():
    arrays = source_key_arrays()
    unmapped = sorted(set(arrays) - set(KEY_ARRAYS))
    assert not unmapped, "keys arrays in proxy/ that tests/docs/test_docs.py cannot map to a " \
        "dotted setting path (add them to KEY_ARRAYS): %s" % unmapped
    return {join(p, k) for a, info in arrays.items() for p in prefixes(KEY_ARRAYS[a])
            for k in info["keys"]}


# --------------------------------------------------------------------------------------
# The settings the docs name
# --------------------------------------------------------------------------------------

def md_setting_rows(path=CONFIG_MD):
    """{setting: {"type": ..., "default": ...}} from every table whose first header is
    `setting`; the first cell is the full dotted path in backticks."""
    rows, header = {}, None
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "setting":
            header = cells
            continue
        if header is None or set(line) <= set("|-: "):
            continue
        m = re.fullmatch(r"`([^`]+)`", cells[0])
        assert m, "%s: a setting table row must start with one `setting.path`: %r" % (path.name, line)
        assert m.group(1) not in rows, "%s: %s is documented twice" % (path.name, m.group(1))
        rows[m.group(1)] = dict(zip(header, cells))
    return rows


ROFF_ESCAPES = [(r"\(lq", "\u201c"), (r"\(rq", "\u201d"), (r"\(dq", '"'), (r"\(aq", "'"),
                (r"\(en", "\u2013"), (r"\(em", "\u2014"), (r"\-", "-"), (r"\&", ""), (r"\%", ""),
                (r"\|", ""), (r"\ ", " "), (r"\e", "\\")]


def unroff(text):
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", text)
    for a, b in ROFF_ESCAPES:
        text = text.replace(a, b)
    return re.sub(r"\\c$", "", text, flags=re.M)


def man_source():
    return MAN.read_text()


def man_section(name):
    src = man_source()
    m = re.search(r"^\.SH\s+\"?%s\"?\s*\n(.*?)(?=^\.SH\s|\Z)" % re.escape(name), src, re.S | re.M)
    assert m, "docs/strangler.8 has no %s section" % name
    return m.group(1)


def macro_args(line):
    """The words of a macro line, unquoted."""
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', line)[1:]]


def man_setting_entries():
    """{setting: description} from `.TP` / `.B setting` / text in CONFIGURATION."""
    lines = man_section("CONFIGURATION").splitlines()
    entries = {}
    for i, line in enumerate(lines):
        if line.strip() != ".TP" or i + 1 >= len(lines) or not lines[i + 1].startswith(".B "):
            continue
        name = unroff(" ".join(macro_args(lines[i + 1])))
        desc = []
        for text in lines[i + 2:]:
            if text.startswith("."):
                break
            desc.append(unroff(text))
        assert name not in entries, "the man page lists %s twice" % name
        entries[name] = " ".join(desc)
    return entries


DOCUMENTED = md_setting_rows()


def test_key_arrays_are_mapped():
    arrays = source_key_arrays()
    assert set(arrays) == set(KEY_ARRAYS), (
        "unmapped keys arrays: %s; mapped but not found (stale entries): %s"
        % (sorted(set(arrays) - set(KEY_ARRAYS)), sorted(set(KEY_ARRAYS) - set(arrays))))
    for a, prefix in ((a, p) for a, v in KEY_ARRAYS.items() for p in prefixes(v)):
        info = arrays[a]
        assert info["keys"], "%s: empty keys array" % (a,)
        assert info["path_arg"] is not None, "%s is never passed to cfgp_check_keys" % (a,)
        if info["path_arg"].startswith('"'):
            # a literal path argument is the section's full path
            assert info["path_arg"].strip('"') == prefix, (a, info["path_arg"], prefix)
        else:
            # built with snprintf: the format names the section, e.g. "%s.match"
            comp = [c for c in prefix.split(".") if c not in ("[i]", "[j]", "NAME")][-1]
            pat = re.compile(r"(^|\.)%s(\.|\[|$)" % re.escape(comp))
            assert any(pat.search(lit) for lit in info["literals"]), \
                "%s: no path literal naming %r in that function; is %r right?" % (a, comp, prefix)


def test_configuration_md_documents_exactly_the_accepted_settings():
    accepted, documented = code_settings(), set(DOCUMENTED)
    assert accepted - documented == set(), "accepted by the parser, missing from " \
        "docs/configuration.md: %s" % sorted(accepted - documented)
    assert documented - accepted == set(), "documented in docs/configuration.md, not accepted " \
        "by the parser: %s" % sorted(documented - accepted)


def test_man_page_names_exactly_the_accepted_settings():
    accepted, listed = code_settings(), set(man_setting_entries())
    assert accepted - listed == set(), "accepted by the parser, missing from docs/strangler.8: " \
        "%s" % sorted(accepted - listed)
    assert listed - accepted == set(), "listed in docs/strangler.8, not accepted by the parser: " \
        "%s" % sorted(listed - accepted)
    text = unroff(man_source())
    for s in accepted:
        assert s in text


@pytest.mark.parametrize("setting", sorted(DOCUMENTED))
def test_man_page_default_matches_configuration_md(setting):
    entries = man_setting_entries()
    assert setting in entries, "docs/strangler.8 does not list %s" % setting
    default = DOCUMENTED[setting].get("default", "").replace("`", "").strip()
    if not default:
        return
    if default == "required":
        assert "required" in entries[setting], (setting, entries[setting])
    else:
        assert re.search(r"default: %s\.(\s|$)" % re.escape(default), entries[setting]), \
            "%s: configuration.md says default %r, the man page says %r" % (
                setting, default, entries[setting])


# --- behaviour: the binary accepts every documented setting, refuses a stranger ---------

def base_config():
    """A minimal config in which every group of the reference exists once."""
    return {
        "listen": [{"address": "127.0.0.1:1", "tls": {"certificates": [{}]}}],
        "backends": {"b": {"url": "http://127.0.0.1:9", "health": {}, "retry_budget": {},
                           "queue": {},
                           "path_rewrite": [{"prefix": "/a", "to": "/"}],
                           "request_headers": {}, "response_headers": {}},
                     "c": {"servers": [{"url": "http://127.0.0.1:8"}]}},
        "default_backend": "b",
        "routes": [{"name": "r", "backend": "b", "match": {"path_prefix": "/"},
                    "rollout": {"backend": "b", "percent": 0.0, "guard": {}},
                    "shadow": {"backend": "b", "compare": {}, "noise": {}}}],
        "timeouts": {}, "limits": {}, "shadow_defaults": {}, "admin": {},
    }


def to_libconfig(v, indent=""):
    if isinstance(v, dict):
        inner = "".join("%s  %s = %s;\n" % (indent, k, to_libconfig(x, indent + "  "))
                        for k, x in v.items())
        return "{\n%s%s}" % (inner, indent)
    if isinstance(v, list):
        return "( " + ", ".join(to_libconfig(x, indent) for x in v) + " )"
    if isinstance(v, tuple):
        return "[ " + ", ".join(to_libconfig(x, indent) for x in v) + " ]"
    if isinstance(v, str):
        return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(v, float):
        return repr(v)
    return str(v)


def config_text(cfg):
    return "".join("%s = %s;\n" % (k, to_libconfig(v)) for k, v in cfg.items())


def locate(cfg, parts):
    """The group a dotted path (without its last part) names in cfg, and its display path."""
    node, shown = cfg, []
    for k, p in enumerate(parts):
        if p in ("[i]", "[j]"):
            node, shown = node[0], shown[:-1] + [shown[-1] + ".[0]"]
        elif p == "NAME":  # the first that has what comes next ("servers": c)
            after = parts[k + 1] if k + 1 < len(parts) else None
            name = next((n for n in node if after in node[n]), next(iter(node)))
            node, shown = node[name], shown + [name]
        else:
            node, shown = node[p], shown + [p]
    return node, ".".join(shown)


@pytest.mark.parametrize("setting", sorted(set(DOCUMENTED) | set(man_setting_entries())))
def test_binary_accepts_setting_and_refuses_unknown_sibling(setting, tmp_path):
    parts = re.findall(r"\[[ij]\]|[^.]+", setting)
    cfg = base_config()
    if setting.startswith("routes.[i].return"):  # a route that answers itself has no backend
        cfg["routes"] = [{"name": "r", "match": {"path_prefix": "/"}, "return": {"status": 410}}]
    if setting.startswith("routes.[i].rollout.set_cookie."):  # its group form
        cfg["routes"][0]["rollout"].update(sticky="cookie:u", set_cookie={})
    parent, shown = locate(cfg, parts[:-1])
    parent.setdefault(parts[-1], 1)
    parent["zz_not_a_setting"] = 1
    conf = tmp_path / "probe.conf"
    conf.write_text(config_text(cfg))
    r = strangler("-t", "-c", conf)
    def reported(path):  # "FILE:LINE: path: unknown setting", exactly that path
        return re.search(r"^[^\n]*:\d+: %s: unknown setting$" % re.escape(path), r.stderr, re.M)

    assert not reported(join(shown, parts[-1])), \
        "documented setting %s is refused by the parser:\n%s" % (setting, r.stderr)
    assert reported(join(shown, "zz_not_a_setting")), \
        "an unknown key next to %s was not reported:\n%s\n%s" % (setting, conf.read_text(), r.stderr)
    assert r.returncode == 1


# --------------------------------------------------------------------------------------
# Code blocks in the docs
# --------------------------------------------------------------------------------------

FENCE_RE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
MD_FILES = sorted(DOCS.glob("*.md")) + [SRC / "README.md"]


def md_blocks(path):
    """[(line, lang, text, skip_reason)] for the fenced blocks of a markdown file."""
    text = path.read_text()
    out = []
    for m in FENCE_RE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip().splitlines()
        prev = before[-1].strip() if before else ""
        skip = None
        n = re.fullmatch(r"<!--\s*not-config\b:?\s*(.*?)\s*-->", prev)
        if n:
            assert n.group(1), "%s:%d: <!-- not-config --> needs a reason" % (path.name, line)
            skip = n.group(1)
        out.append((line, m.group(1), m.group(2), skip))
    return out


def man_blocks():
    """[(line, "", text, None)] for the .EX/.EE blocks of the man page, roff removed."""
    out, cur, start = [], None, 0
    for i, line in enumerate(man_source().splitlines(), 1):
        if line.startswith(".EX"):
            cur, start = [], i + 1
        elif line.startswith(".EE"):
            out.append((start, "", unroff("\n".join(cur)) + "\n", None))
            cur = None
        elif cur is not None:
            cur.append(line)
    return out


def all_blocks():
    for path in MD_FILES:
        for line, lang, text, skip in md_blocks(path):
            yield "%s:%d" % (path.relative_to(SRC), line), lang, text, skip
    for line, lang, text, skip in man_blocks():
        yield "docs/strangler.8:%d" % line, lang, text, skip


def top_level_keys():
    return set(source_key_arrays()[("config.c", "load", "keys")]["keys"])


def meaningful_lines(text):
    return [ln for ln in text.splitlines() if ln.strip() and not re.match(r"\s*(#|//)", ln)]


def looks_like_config(lang, text):
    if lang not in ("", "conf", "cfg", "libconfig"):
        return False
    lines = meaningful_lines(text)
    return bool(lines) and " = " in text and ";" in text and not lines[0].startswith("$ ") and \
        any(re.match(r"\s*\{?\s*[A-Za-z_][\w-]*\s*=\s*\S", ln) for ln in lines)


def depth0_keys(text):
    """Names assigned at nesting depth 0 (top-level settings of a config text)."""
    keys, depth = [], 0
    for m in re.finditer(r'"(?:\\.|[^"\\])*"|#[^\n]*|//[^\n]*|/\*.*?\*/|[{(\[]|[})\]]|'
                         r'([A-Za-z_][\w-]*)\s*=', text, re.S):
        tok = m.group(0)
        if tok in "{([":
            depth += 1
        elif tok in "})]":
            depth -= 1
        elif m.group(1) and depth == 0:
            keys.append(m.group(1))
    return keys


def substitute_files(text, tmp_path):
    """`strangler -t` reads admin.token_file, which a doc example cannot ship, and
    checks that the files the start writes (access_log, diff_log, pid_file) can
    be opened, in directories (/var/log/strangler, /run/strangler) this machine
    need not have: point every token_file at a temporary token, and those files
    into tmp_path (nothing else is changed)."""
    token = tmp_path / "admin.token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    text = re.sub(r'(token_file\s*=\s*)"[^"]*"', lambda m: '%s"%s"' % (m.group(1), token), text)
    return re.sub(r'\b((?:access_log|diff_log|pid_file)\s*=\s*)"([^"-][^"]*)"',
                  lambda m: '%s"%s"' % (m.group(1), tmp_path / os.path.basename(m.group(2))),
                  text)


def wrap_snippet(text):
    """A complete config around a snippet: as is, or with the required settings added."""
    first = meaningful_lines(text)[0].strip()
    if first.startswith("{") and re.match(r"\{\s*name\s*=", first):
        text, present = "routes = (\n%s\n);\n" % text, {"routes"}
    else:
        present = set(depth0_keys(text))
        unknown = present - top_level_keys()
        assert not unknown, "not top-level settings: %s" % sorted(unknown)
    if {"listen", "backends", "default_backend"} <= present:
        return text
    pre = []
    if "listen" not in present:
        pre.append('listen = ( { address = "127.0.0.1:1"; } );')
    if "backends" not in present:
        pre.append('backends = { legacy = { url = "http://127.0.0.1:9001"; };\n'
                   '             modern = { url = "http://127.0.0.1:9002"; }; };')
        default = "legacy"
    else:
        m = re.search(r"backends\s*=\s*\{\s*([A-Za-z][\w-]*)\s*=", text)
        default = m.group(1) if m else "legacy"
    if "default_backend" not in present:
        pre.append('default_backend = "%s";' % default)
    return "\n".join(pre) + "\n" + text


CONFIG_BLOCKS = [(where, text) for where, lang, text, skip in all_blocks()
                 if skip is None and looks_like_config(lang, text)]


def test_there_are_config_snippets():
    # if this drops, the classifier above probably stopped recognising them
    assert len(CONFIG_BLOCKS) >= 10, [w for w, _ in CONFIG_BLOCKS]


@pytest.mark.parametrize("where,text", CONFIG_BLOCKS, ids=[w for w, _ in CONFIG_BLOCKS])
def test_config_snippet_passes_check(where, text, tmp_path):
    full = substitute_files(wrap_snippet(text), tmp_path)
    conf = tmp_path / "snippet.conf"
    conf.write_text(full)
    r = strangler("-t", "-c", conf)
    assert r.returncode == 0 and "configuration OK" in r.stdout, \
        "%s: the snippet does not pass strangler -t (mark a deliberately partial block with " \
        "<!-- not-config: why -->):\n--- checked as ---\n%s--- strangler -t ---\n%s%s" % (
            where, full, r.stdout, r.stderr)


def test_configuration_md_example_is_conf_strangler_conf():
    text = CONFIG_MD.read_text()
    m = re.search(r"A complete example \(`conf/strangler\.conf`[^\n]*\n+```\n(.*?)^```", text, re.S | re.M)
    assert m, "docs/configuration.md: the complete example of conf/strangler.conf is gone"

    def norm(t):
        return [ln.split("#")[0].rstrip() for ln in meaningful_lines(t) if ln.split("#")[0].strip()]

    assert norm(m.group(1)) == norm((SRC / "conf" / "strangler.conf").read_text())


# --- transcripts --------------------------------------------------------------------------

def transcripts():
    """[(where, command, expected output)] for every `$ strangler ...` in a code block."""
    out = []
    for where, lang, text, skip in all_blocks():
        lines = text.rstrip("\n").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ strangler "):
                j = i + 1
                while j < len(lines) and not lines[j].startswith("$ "):
                    j += 1
                out.append((where, line[2:], "\n".join(lines[i + 1:j])))
    return out


TRANSCRIPTS = transcripts()


def test_configuration_md_has_an_explain_transcript():
    assert any(w.startswith("docs/configuration.md") and c.startswith("strangler explain ")
               for w, c, _ in TRANSCRIPTS), "the explain transcript left docs/configuration.md"


@pytest.mark.parametrize("where,command,expected", TRANSCRIPTS, ids=[t[0] for t in TRANSCRIPTS])
def test_transcript_is_real_output(where, command, expected):
    argv = shlex.split(command)
    r = strangler(*argv[1:])
    got = "\n".join(ln.rstrip() for ln in r.stdout.rstrip("\n").splitlines())
    want = "\n".join(ln.rstrip() for ln in expected.splitlines())
    assert got == want, "%s: `%s` (run from %s) prints:\n%s\nstderr:\n%s" % (
        where, command, SRC, r.stdout, r.stderr)


@pytest.mark.parametrize("conf", sorted((SRC / "conf").glob("*.conf")), ids=lambda p: p.name)
def test_shipped_config_passes_check(conf, tmp_path):
    # from a directory like the source tree once tests/demo.sh made build/demo
    # (the demo's diff log and state are there: -t checks it can write them)
    (tmp_path / "build" / "demo").mkdir(parents=True)
    r = strangler("-t", "-c", conf, cwd=tmp_path)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------------------
# Command line: -h against the man page
# --------------------------------------------------------------------------------------

OPTION_RE = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def help_text():
    r = strangler("-h")
    assert r.returncode == 0, r.stderr
    return r.stdout


def help_subcommands(text):
    subs = set()
    for line in text.splitlines():
        m = re.match(r"\s*(?:usage:\s*)?strangler\s+(\S+)", line)
        if m and not m.group(1).startswith(("[", "-")):
            subs.add(m.group(1))
    return subs


def synopsis():
    """(subcommands, options) named by the man page SYNOPSIS."""
    subs, text = set(), []
    for line in man_section("SYNOPSIS").splitlines():
        if line.startswith(".SY"):
            words = unroff(" ".join(macro_args(line))).split()
            assert words[0] == "strangler", line
            subs.update(words[1:])
        elif line.startswith(".OP"):
            text.append(unroff(macro_args(line)[0]))
        elif line.startswith(".") and not line.startswith((".B", ".I", ".R")):
            continue
        else:
            text.append(unroff(" ".join(macro_args(line)) if line.startswith(".") else line))
    return subs, set(OPTION_RE.findall(" ".join(text)))


def test_help_and_synopsis_name_the_same_subcommands():
    man_subs, _ = synopsis()
    assert man_subs == help_subcommands(help_text())
    assert {"explain", "diff-report"} <= man_subs


def test_help_and_synopsis_name_the_same_options():
    _, man_opts = synopsis()
    help_opts = set(OPTION_RE.findall(help_text()))
    assert man_opts - help_opts == set(), "in the SYNOPSIS, not in strangler -h: %s" % sorted(
        man_opts - help_opts)
    assert help_opts - man_opts == set(), "in strangler -h, not in the SYNOPSIS: %s" % sorted(
        help_opts - man_opts)


def test_every_synopsis_option_is_described():
    _, opts = synopsis()
    described = unroff(man_section("OPTIONS") + man_section("SUBCOMMANDS"))
    for o in opts:
        assert re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o), described), o


def test_subcommand_usage_matches_man_page():
    # each subcommand's own usage line is the one in -h and in the SUBCOMMANDS section
    r = strangler("diff-report", "--help")
    assert r.returncode == 0
    assert "strangler diff-report FILE... [--route NAME]" in r.stdout
    assert "diff-report FILE... [--route NAME]" in unroff(man_section("SUBCOMMANDS"))
    assert "strangler diff-report FILE... [--route NAME]" in help_text()
    r = strangler("explain")
    assert r.returncode == 2
    usage = r.stderr.strip().splitlines()[0]
    assert usage.replace("usage: strangler ", "") in unroff(man_section("SUBCOMMANDS")), usage


# --------------------------------------------------------------------------------------
# The man page itself
# --------------------------------------------------------------------------------------

def test_man_page_version_is_the_project_version():
    m = re.search(r"version\s*:\s*'([^']+)'", (SRC / "meson.build").read_text())
    th = [ln for ln in man_source().splitlines() if ln.startswith(".TH ")][0]
    assert "strangler %s" % m.group(1) in th
    assert strangler("-V").stdout.splitlines()[0] == "strangler %s" % m.group(1)


@pytest.mark.skipif(not shutil.which("groff"), reason="groff not installed")
def test_man_page_renders_without_warnings():
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)], capture_output=True,
                       text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(not shutil.which("lexgrog"), reason="lexgrog (man-db) not installed")
def test_man_page_name_section_is_parsable():
    r = subprocess.run(["lexgrog", str(MAN)], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and '"strangler - ' in r.stdout, r.stdout + r.stderr


def test_man_page_sections():
    names = re.findall(r"^\.SH\s+\"?([A-Z ]+?)\"?\s*$", man_source(), re.M)
    assert names == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS", "CONFIGURATION",
                     "SIGNALS", "FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO"]


def test_see_also_names_every_doc():
    see = unroff(man_section("SEE ALSO"))
    named = set(re.findall(r"docs/[\w-]+\.md", see))
    present = {"docs/" + p.name for p in DOCS.glob("*.md")}
    assert named == present


def test_man_page_is_installed_by_meson():
    assert re.search(r"install_man\(\s*'docs/strangler\.8'", (SRC / "meson.build").read_text())


# --------------------------------------------------------------------------------------
# Links between the docs
# --------------------------------------------------------------------------------------

def slug(heading):
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(path):
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", path.read_text(), re.M)}


@pytest.mark.parametrize("doc", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), "%s links to missing %s" % (doc.name, target)
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), "%s links to missing anchor %s" % (doc.name, target)


# --------------------------------------------------------------------------------------
# docs/security.md against the binary
# --------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """A strangler in front of a backend that accepts connections (in its backlog) and
    never answers: refused requests never reach it, and a request refused after its
    head was forwarded cannot race a "connect refused" 502."""
    d = tmp_path_factory.mktemp("proxy")
    port = free_port()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    conf = d / "strangler.conf"
    conf.write_text(
        'listen = ( { address = "127.0.0.1:%d"; } );\nworkers = 1;\n'
        'backends = { b = { url = "http://127.0.0.1:%d"; }; };\ndefault_backend = "b";\n'
        "timeouts = { client_header_ms = 300; };\n"
        "limits = { max_request_line = 100; max_headers = 8; max_body_bytes = 10; };\n"
        % (port, silent.getsockname()[1]))
    err = open(d / "stderr", "w+")
    p = subprocess.Popen([BINARY, "-c", str(conf)], cwd=d, stdout=err, stderr=err)
    deadline = time.monotonic() + 5
    while "started" not in (d / "stderr").read_text():
        assert p.poll() is None and time.monotonic() < deadline, (d / "stderr").read_text()
        time.sleep(0.02)
    yield {"port": port, "proc": p, "stderr": d / "stderr"}
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=5) == 0
    err.close()
    silent.close()


def exchange(port, raw, wait=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=wait + 3) as c:
        c.sendall(raw)
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return data
            data += chunk


# (key phrase of the docs/security.md row, raw request, status the row must give)
REFUSALS = [
    ("both `Content-Length` and `Transfer-Encoding`",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two `Content-Length` headers",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400),
    ("a `Transfer-Encoding` other than exactly `chunked`",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("an empty element in `Transfer-Encoding`",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400),
    ("`Transfer-Encoding` in an HTTP/1.0 request",
     b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("(obs-fold)", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("a control character (other than tab)", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n", 400),
    ("not an RFC 9110 token", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400),
    ("an empty header name", b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n", 400),
    ("a line ending that is not CRLF", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("a trailer section (after the last chunk)",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n"
     b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("HTTP/1.1 without `Host`", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("more than one `Host`", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("an HTTP/0.9 request line", b"GET /\r\n\r\n", 505),
    ("`HTTP/2.0`", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("`PRI * HTTP/2.0`", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("`CONNECT`", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405),
    ("a method llhttp does not know", b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ("a request target that is not a path", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("a `%` not followed by two hex digits", b"GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("climb above `/`", b"GET /a/../.. HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("longer than `limits.max_request_line`", b"GET /" + b"a" * 120 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("more header fields than `limits.max_headers`",
     b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(9)) + b"\r\n", 431),
    ("a body larger than `limits.max_body_bytes`",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 413),
    ("a chunk extension longer than 4096 bytes",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;e=" + b"x" * 4100 + b"\r\n", 400),
    ("a request head not complete within", b"GET / HTTP/1.1\r\nHost: x\r\n", 408),
]


def security_row(phrase):
    rows = [ln for ln in SECURITY_MD.read_text().splitlines() if ln.startswith("|") and phrase in ln]
    assert len(rows) == 1, "docs/security.md: %d table rows contain %r" % (len(rows), phrase)
    return rows[0]


@pytest.mark.parametrize("phrase,raw,status", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_security_refusal(proxy, phrase, raw, status):
    row = security_row(phrase)
    assert "`%d`" % status in row, "docs/security.md row %r does not say %d" % (row, status)
    answer = exchange(proxy["port"], raw)
    assert answer.startswith(b"HTTP/1.1 %d " % status), (phrase, answer[:200])
    assert b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n")[0] + b"\r\n"


def test_security_client_shadow_marker_and_hop_headers_are_dropped(tmp_path):
    """docs: X-Strangler-Shadow is never forwarded from clients; Connection-named headers
    are dropped, Host never is."""
    seen = []
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(1)
    backend.settimeout(5)
    port = free_port()
    conf = tmp_path / "s.conf"
    conf.write_text('listen = ( { address = "127.0.0.1:%d"; } );\nworkers = 1;\n'
                    'backends = { b = { url = "http://127.0.0.1:%d"; }; };\n'
                    'default_backend = "b";\n' % (port, backend.getsockname()[1]))
    p = subprocess.Popen([BINARY, "-c", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        with client:
            client.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close, Host, X-Secret\r\n"
                           b"X-Secret: s\r\nX-Strangler-Shadow: 1\r\nKeep-Alive: 5\r\n\r\n")
            conn, _ = backend.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                seen.append(data.split(b"\r\n\r\n")[0].decode())
                conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            client.recv(65536)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=5)
        backend.close()
    names = [ln.split(":")[0].lower() for ln in seen[0].split("\r\n")[1:]]
    assert "host" in names
    for dropped in ("x-strangler-shadow", "x-secret", "keep-alive", "connection"):
        assert dropped not in names, seen[0]
    text = SECURITY_MD.read_text()
    assert "`X-Strangler-Shadow` is dropped from client requests" in text
    assert "`Host`\nis never removed" in text or "`Host` is never removed" in text.replace("\n", " ")


# --------------------------------------------------------------------------------------
# Signals: what the docs say SIGHUP does
# --------------------------------------------------------------------------------------

def test_sighup_reloads_as_documented(tmp_path):
    """docs/operations.md and the man page say SIGHUP reloads the file, keeps the running
    configuration when the file has errors (logged as `reload: FILE:LINE: ...`), and logs
    `reload: FILE: N backends, M routes` or `keeping the running configuration`."""
    ops = (DOCS / "operations.md").read_text()
    row = [ln for ln in ops.splitlines() if ln.startswith("| `SIGHUP`")]
    assert row and "reload the configuration file" in row[0], row
    for phrase in ("reload: FILE: N backends, M routes", "keeping the running configuration"):
        assert phrase in ops, phrase
    man_hup = unroff(man_section("SIGNALS")).split("SIGHUP", 1)[1]
    assert "Reload the configuration file" in man_hup

    port = free_port()
    conf = tmp_path / "h.conf"

    def write(extra=""):
        conf.write_text('listen = ( { address = "127.0.0.1:%d"; } );\nworkers = 1;\n'
                        'backends = { b = { url = "http://127.0.0.1:9"; }; };\n'
                        'default_backend = "b";\n%s' % (port, extra))

    def log():
        return (tmp_path / "stderr").read_text()

    def wait_for(text, n=1):
        deadline = time.monotonic() + 5
        while log().count(text) < n:
            assert p.poll() is None and time.monotonic() < deadline, \
                "waited for %r:\n%s" % (text, log())
            time.sleep(0.02)

    write()
    err = open(tmp_path / "stderr", "w+")
    p = subprocess.Popen([BINARY, "-c", str(conf)], stdout=err, stderr=err)
    try:
        wait_for("started")
        write("bogus_setting = 1;\n")
        p.send_signal(signal.SIGHUP)
        wait_for("keeping the running configuration")
        assert re.search(r"reload: .*h\.conf:\d+: bogus_setting: unknown setting", log()), log()
        write('routes = ( { name = "r"; backend = "b"; } );\n')
        p.send_signal(signal.SIGHUP)
        wait_for("reload: %s: 1 backends, 1 routes" % conf)
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
        err.close()


# The reload column: every setting says whether a reload applies it, and the
# restart-only ones are exactly those the runtime keeps across a reload
# (proxy/runtime.c keep_restart_only warns "… applies after a restart").
RESTART_ONLY = {"workers", "access_log", "shadow_defaults.diff_log", "pid_file", "user",
                "admin", "admin.address", "admin.state_file"}


def test_every_setting_says_whether_reload_applies_it():
    rows = md_setting_rows()
    missing = sorted(s for s, r in rows.items() if r.get("reload") not in ("yes", "restart"))
    assert not missing, "settings without a reload cell (yes or restart): %s" % missing
    assert {s for s, r in rows.items() if r["reload"] == "restart"} == RESTART_ONLY
    runtime = (SRC / "proxy" / "runtime.c").read_text()
    for word in ("workers", "access_log", "shadow_defaults.diff_log", "pid_file", "user", "admin"):
        assert re.search(r'"%s changed[^\n]*after a restart' % re.escape(word), runtime) or \
            re.search(r'keep_string\(diag, [^,]+, "%s",' % re.escape(word), runtime) or \
            re.search(r'"%s settings changed' % re.escape(word), runtime), \
            "proxy/runtime.c no longer keeps %s across a reload: update the docs" % word


def test_every_setting_has_an_example_of_itself():
    for setting, row in md_setting_rows().items():
        leaf = re.findall(r"\[[ij]\]|[^.]+", setting)[-1]
        example = row.get("example", "").strip("`")
        assert re.match(r"%s = .+;$" % re.escape(leaf), example), \
            "%s: the example %r does not set %s" % (setting, example, leaf)


# --------------------------------------------------------------------------------------
# docs/migration.md against the demo it runs on
# --------------------------------------------------------------------------------------

MIGRATION_MD = DOCS / "migration.md"


def migration_section(title_start):
    text = MIGRATION_MD.read_text()
    m = re.search(r"^## %s.*?(?=^## )" % re.escape(title_start), text, re.S | re.M)
    assert m, "docs/migration.md: no section starting %r" % title_start
    return m.group(0)


def test_migration_step3_diff_log_is_the_demos_and_needs_a_restart():
    """Step 3 added a diff log and said to reload: the diff log is opened at
    start only, so diff-report failed with "cannot open". The step's diff log
    is the demo's own (set from the start), and the step says what a restart
    takes, and how the demo is restarted."""
    step = migration_section("3. Shadow it")
    demo = (SRC / "conf" / "demo.conf").read_text()
    logs = re.findall(r'diff_log = "([^"]+)"', step)
    assert logs and set(logs) == set(re.findall(r'diff_log = "([^"]+)"', demo)), logs
    assert "shadow_defaults.diff_log changed: applies after a restart" in step
    assert "bash tests/demo.sh" in step and "restart" in step
    assert "bash tests/demo.sh" in MIGRATION_MD.read_text().split("## 1.")[0]


def test_migration_persists_changes_where_the_demo_does():
    """Step 4 says runtime changes are persisted in admin.state_file: the demo
    has one (it had none, so a restart lost them)."""
    assert "persisted in\n`admin.state_file`" in migration_section("4. Roll out") or \
        "persisted in `admin.state_file`" in migration_section("4. Roll out")
    demo = (SRC / "conf" / "demo.conf").read_text()
    m = re.search(r'^admin = \{[^\n]*state_file = "([^"]+)"', demo, re.M)
    assert m and m.group(1) in MIGRATION_MD.read_text(), "conf/demo.conf: no admin.state_file"


def test_migration_says_when_to_move_on():
    """The runbook gives criteria for leaving each step, in the terms the guard
    and diff-report use (settings that exist)."""
    section = migration_section("When to move on")
    for step in ("3. shadowing", "each rollout step", "flip", "retire"):
        assert step in section, step
    for word in ("compared", "business cycle", "5xx", "p99"):
        assert word in section, word
    for setting in re.findall(r"`(max_\w+|min_requests|steps|step_interval_s)`", section):
        assert "routes.[i].rollout.guard." + setting in md_setting_rows(), setting
    assert re.search(r"`(max_error_rate|max_diff_rate|max_p99_ratio)`", section)
    assert "(#when-to-move-on)" in migration_section("4. Roll out")


# --------------------------------------------------------------------------------------
# The access log's fields and the metrics, against what the binary writes
# --------------------------------------------------------------------------------------

def access_log_fields_documented():
    """The field names in the first column of configuration.md's access-log table."""
    text = CONFIG_MD.read_text().split("\n## Access log", 1)[1]
    fields, in_table = set(), False
    for line in text.splitlines():
        if line.startswith("| field |"):
            in_table = True
        elif in_table and line.startswith("|"):
            fields.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
        elif in_table:
            break
    assert fields, "docs/configuration.md: the access log's field table is gone"
    return fields


def test_access_log_fields_are_documented():
    """Every field proxy/accesslog.c writes is in the table, and the table names no
    field it does not write."""
    funcs = dict(c_functions(SRC / "proxy" / "accesslog.c"))
    # the line, its first field, and the list of servers a request left
    body = funcs["sp_access_format"] + funcs["sp_accesslog_add_time"] + funcs["add_tries"]
    written = set(re.findall(r'add_json_(?:text_)?field\(\s*\w+,\s*"(\w+)"', body)) | \
        set(re.findall(r'\\"(\w+)\\":', body))
    assert {"time", "status", "backend", "request_id"} <= written, written
    documented = access_log_fields_documented()
    assert written - documented == set(), "written but not in docs/configuration.md's access " \
        "log table: %s" % sorted(written - documented)
    assert documented - written == set(), "in the access log table, never written: %s" % \
        sorted(documented - written)


def test_every_metric_family_is_documented(tmp_path):
    """The families GET /metrics serves (a backend with two servers, a shadowed route
    with a rollout and guard, an access log) are exactly the rows of the metrics table in
    docs/operations.md."""
    rows = set(re.findall(r"^\| `(strangler_\w+)` \|", (DOCS / "operations.md").read_text(),
                          re.M))
    assert len(rows) >= 10, rows
    port, admin = free_port(), free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(
        'listen = ( { address = "127.0.0.1:%d"; } );\nworkers = 1;\n'
        'access_log = "%s";\n'
        'backends = { a = { servers = ["http://127.0.0.1:9", "http://127.0.0.1:10"]; };\n'
        '             b = { url = "http://127.0.0.1:11"; }; };\n'
        'default_backend = "a";\n'
        'routes = ( { name = "r"; match = { path_prefix = "/r"; }; backend = "a";\n'
        '             rollout = { backend = "b"; percent = 5.0;\n'
        '                         guard = { max_error_rate = 1.0; }; };\n'
        '             shadow = { backend = "b"; }; } );\n'
        'admin = { address = "127.0.0.1:%d"; };\n' % (port, tmp_path / "access.log", admin))
    err = open(tmp_path / "stderr", "w+")
    p = subprocess.Popen([BINARY, "-c", str(conf)], stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", admin), timeout=1) as s:
                    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Connection: close\r\n\r\n")
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "stderr").read_text()
                time.sleep(0.02)
        assert data.startswith(b"HTTP/1.1 200"), data[:300]
        served = set(re.findall(r"^# TYPE (strangler_\w+) ", data.decode(), re.M))
        assert served - rows == set(), "served by /metrics, not in docs/operations.md's " \
            "metrics table: %s" % sorted(served - rows)
        assert rows - served == set(), "in docs/operations.md's metrics table, not served: " \
            "%s" % sorted(rows - served)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
        err.close()
