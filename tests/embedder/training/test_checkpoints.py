import json

import pytest

from embedder.training.checkpoints import BACKUP_METADATA, resume_epoch


def test_resume_epoch_reads_the_backups_metadata(tmp_path):
    assert resume_epoch(tmp_path) is None  # no backup: nothing to resume
    (tmp_path / BACKUP_METADATA).write_text(json.dumps({"epoch": 3, "batch": 0}))
    assert resume_epoch(tmp_path) == 3


@pytest.mark.parametrize("text", ["not json", "[3]", '{"epoch": -1}', '{"epoch": true}',
                                  '{"epoch": 2.5}', '{"batch": 1}', "\udcff"])
def test_resume_epoch_of_damaged_metadata_is_none(tmp_path, text):
    (tmp_path / BACKUP_METADATA).write_bytes(text.encode("utf-8", "surrogateescape"))
    assert resume_epoch(tmp_path) is None
