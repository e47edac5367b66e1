"""The review queue (issue 18 item 3, docs/review.md): predictions worth a person's look,
flagged by the service after it stored them, kept in ``review_items`` and streamed to the
review topic."""
