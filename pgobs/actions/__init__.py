"""Actions: what an observer does when it matches — webhook, slack, email, database, log,
python, cache. ``specs`` says what each accepts; the other modules run them."""
