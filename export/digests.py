"""The sha256 of large files, remembered by what the file system says about each file: defined in
``rospr.artifacts`` (the method's checkpoint identities use it too, and ``rospr`` imports nothing of
``rospr_export``); its docstring says what the stat key does and does not catch. Re-exported here
for the export's readers."""

from rospr.artifacts import MEMO_FORMAT, MEMO_VERSION, RACY_S, FileDigests, default_memo, stat_key

__all__ = ["MEMO_FORMAT", "MEMO_VERSION", "RACY_S", "FileDigests", "default_memo", "stat_key"]
