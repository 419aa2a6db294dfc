"""The ground floor: what every other part of ooc may use and which uses nothing of ooc's.

Belongs here: small facts and helpers with no knowledge of stores, sources, training or the
benchmark — sizes in bytes (``units``), the checksum form of files (``checksums``), threads' priority
(``threads``), quiet start-up of TensorFlow (``startup``). Does not belong here: anything that opens a
store, reads a source or knows a layout.
"""
