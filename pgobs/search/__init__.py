"""The language of ``pgobs search``: one parser, two translations (Postgres, Elasticsearch)."""

from __future__ import annotations

from pgobs.search.lexer import QuerySyntaxError
from pgobs.search.parser import parse
from pgobs.search.to_es import to_es
from pgobs.search.to_sql import to_sql

__all__ = ["QuerySyntaxError", "parse", "to_es", "to_sql"]
