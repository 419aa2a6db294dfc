"""``ooc bench``: which storage to pick for a user's data, measured. The top floor under the CLI.

Belongs here: runs and their measurements (``run``: conversions, read passes, training against the
in-memory baseline; ``out_of_core``: passes in memory cgroups), the typed rows they produce
(``rows``), the tools of measurement (``measure``: peak memory, a cold page cache), the reports
(``report``), shuffle quality and the local S3 server the remote passes use. Does not belong here:
anything the library needs to convert, read or train — nothing below this package imports it.
"""
