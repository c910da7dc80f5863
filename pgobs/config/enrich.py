"""An observer's ``enrich:`` list: named HTTP or SQL lookups, each optionally cached."""

from __future__ import annotations

import re

from pgobs.config.fields import Fields
from pgobs.config.templatecheck import checked_template
from pgobs.reliability.specs import (
    SQL_PARAMETER,
    CacheRule,
    HttpLookup,
    Lookup,
    SqlLookup,
)
from pgobs.templates import Template

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# The scheme and host of a lookup URL are written out; only its path and query may be templates,
# so an event's data can never send a lookup to another host.
_ORIGIN = re.compile(r"^https?://[^/{}?#]+(/|$)")
MAX_TTL_S = 30 * 86_400.0


def parse_enrich(f: Fields) -> tuple[Lookup, ...]:
    if not f.has("enrich"):
        return ()
    items = f.get("enrich")
    if not isinstance(items, list) or not items:
        f.issues.error(
            f.at("enrich"),
            "'enrich' must be a non-empty list of lookups",
            'e.g. enrich: [{name: customer, sql: "SELECT * FROM customers WHERE id = '
            '%(customer_id)s"}]',
        )
        return ()
    lookups: list[Lookup] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        lf = Fields(item, (*f.at("enrich"), index), f.issues, "a lookup", strict_env=f.strict_env)
        if not lf.ok:
            continue
        lookup = _lookup(lf)
        if lookup is None:
            continue
        if lookup.name in seen:
            lf.issues.error(
                lf.at("name"), f"two lookups are named {lookup.name!r}", "give each its own name"
            )
        seen.add(lookup.name)
        lookups.append(lookup)
    return tuple(lookups)


def _lookup(lf: Fields) -> Lookup | None:
    name = lf.string("name", required=True, hint="name: customer (templates use enrich.customer)")
    if name is not None and not _NAME.match(name):
        lf.issues.error(
            lf.at("name"),
            f"lookup name {name!r} is not an identifier",
            "use letters, digits and _ (templates write enrich.<name>)",
        )
    lf.one_of("http", "sql", hint="give http: {url: ...} or sql: SELECT ...")
    source: HttpLookup | SqlLookup | None = None
    if lf.get("http") is not None:
        source = _http(lf)
    elif lf.get("sql") is not None:
        source = _sql(lf)
    cache = _cache(lf) if lf.get("cache") is not None else None
    timeout_s = lf.duration("timeout", default=5.0, minimum=0.001, maximum=300.0)
    lf.finish()
    if name is None or source is None:
        return None
    return Lookup(name=name, source=source, cache=cache, timeout_s=timeout_s)


def _http(lf: Fields) -> HttpLookup | None:
    hf = Fields(
        lf.get("http"), lf.at("http"), lf.issues, "an http lookup", strict_env=lf.strict_env
    )
    if not hf.ok:
        return None
    url_source = hf.string(
        "url", required=True, hint='url: "https://crm.internal/customers/{{ data.customer_id }}"'
    )
    url = None
    if url_source is not None:
        if not _ORIGIN.match(url_source):
            hf.issues.error(
                hf.at("url"),
                f"lookup url {url_source!r} is not an http(s) URL with a fixed host",
                "write http:// or https:// and the host in full; templates go in the path, "
                'e.g. "https://crm.internal/customers/{{ data.customer_id }}"',
            )
        else:
            url = _template(hf, "url", url_source, "lookup url")
    headers: list[tuple[str, Template]] = []
    for key, value in hf.string_map("headers").items():
        header = _template(hf, "headers", value, f"header {key}")
        if header is not None:
            headers.append((key, header))
    hf.finish()
    return None if url is None else HttpLookup(url=url, headers=tuple(headers))


def _sql(lf: Fields) -> SqlLookup | None:
    sql = lf.string("sql", required=True)
    if sql is None:
        return None
    if not sql.lstrip().upper().startswith(("SELECT", "WITH", "VALUES", "TABLE")):
        lf.issues.error(
            lf.at("sql"),
            "a sql lookup must be a query (SELECT, WITH, VALUES)",
            "e.g. SELECT name, tier FROM customers WHERE id = %(customer_id)s",
        )
        return None
    return SqlLookup(sql=sql, parameters=tuple(dict.fromkeys(SQL_PARAMETER.findall(sql))))


def _cache(lf: Fields) -> CacheRule | None:
    cf = Fields(lf.get("cache"), lf.at("cache"), lf.issues, "a lookup cache", strict_env=False)
    if not cf.ok:
        return None
    source = cf.string("key", required=True, hint='key: "customer:{{ data.customer_id }}"')
    ttl_s = cf.duration("ttl", default=60.0, minimum=0.001, maximum=MAX_TTL_S)
    local_ttl_s = cf.duration("local_ttl", default=min(1.0, ttl_s), minimum=0.0, maximum=ttl_s)
    key = None if source is None else _template(cf, "key", source, "cache key")
    if key is not None and source is not None and "{" not in source:
        cf.issues.error(
            cf.at("key"),
            f"cache key {source!r} has no template: every event would share one entry",
            'name what the lookup depends on, e.g. key: "customer:{{ data.customer_id }}"',
        )
        key = None
    cf.finish()
    return None if key is None else CacheRule(key=key, ttl_s=ttl_s, local_ttl_s=local_ttl_s)


def _template(f: Fields, field: str, source: str, what: str) -> Template | None:
    return checked_template(f, field, source, "templates look like {{ data.field }}", what)
