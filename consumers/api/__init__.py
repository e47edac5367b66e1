"""``tagfleet api``: the tags API for DAM integrations over the metadata store (docs/api.md)."""
