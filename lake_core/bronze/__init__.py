"""Bronze as files: the one reader of its layout.

- ``layout``: file names, ingest groups, hour folders, ``_COMPLETE`` markers;
- ``hour_files``: one hour's files, checked and read (Silver, the gates);
- ``readiness``: is an hour ready for Silver, empty for good, or still open (the DAGs).
"""
