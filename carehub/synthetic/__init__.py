"""A synthetic health and social care region with known ground truth.

It feeds carehub end to end (ingest, linkage, indicators, alerts) with realistic volumes
and realistic mess, and keeps the truth (who each local record really is, what each
spell really was) so that linkage and indicator accuracy can be measured, not guessed.

    region = generate_region(RegionConfig(people=10_000, seed=42))
    for record in iter_records(region):
        producer.send(topic, record.value, key=record.key, headers=record.headers)
"""

from carehub.synthetic.activity import Spell
from carehub.synthetic.codes import ACSC_PREFIXES, is_acsc_primary
from carehub.synthetic.config import RegionConfig
from carehub.synthetic.identity import LocalRecord
from carehub.synthetic.noise import MALFORMED_KINDS
from carehub.synthetic.orgs import Directory, Organisation, OrgKind
from carehub.synthetic.population import Person
from carehub.synthetic.region import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    KIND_DUPLICATE,
    KIND_VALID,
    MALFORMED_PREFIX,
    Region,
    SyntheticRecord,
    decode,
    generate_region,
    iter_records,
    json_line,
    write_jsonl,
)

__all__ = [
    "ACSC_PREFIXES",
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "KIND_DUPLICATE",
    "KIND_VALID",
    "MALFORMED_KINDS",
    "MALFORMED_PREFIX",
    "Directory",
    "LocalRecord",
    "OrgKind",
    "Organisation",
    "Person",
    "Region",
    "RegionConfig",
    "Spell",
    "SyntheticRecord",
    "decode",
    "generate_region",
    "is_acsc_primary",
    "iter_records",
    "json_line",
    "write_jsonl",
]
