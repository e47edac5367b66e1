"""Generated datasets on disk: the writers live in :mod:`models.synthetic` (the demo uses them)."""

from models.synthetic import colour_folder, colours_jsonl, shapes_folder

__all__ = ["colour_folder", "colours_jsonl", "shapes_folder"]
