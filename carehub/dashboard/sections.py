"""The page's sections, in order: what each reads from the gateway, how it is drawn, how it reads as JSON.

A section is one gateway read (a gRPC call made with the practice's own certificate, so the
gateway answers only with what that practice may see and audits the read), a renderer from
carehub/dashboard/page.py, and the JSON form of what was read (``/data.json``). Another
section is one more entry here and its renderer; a figure added to the indicator values (a
national value, say) goes into carehub/dashboard/figures.py ``comparators``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf import json_format

from carehub.dashboard.page import PageContext, render_caselist, render_indicators_answer, render_review_packs
from carehub.partner import PartnerClient
from carehub.v1 import partner_pb2 as pb
from carehub.v1 import risk_pb2 as rk

T = TypeVar("T")


@dataclass(frozen=True)
class Section(Generic[T]):
    id: str  # the HTML anchor and the key in /data.json
    title: str
    read: Callable[[PartnerClient], T]  # one gateway read
    render: Callable[[T, PageContext], str]  # pure: an HTML fragment
    as_json: Callable[[T], Any]


def _values_json(answer: pb.IndicatorsResponse) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(v, preserving_proto_field_name=True) for v in answer.values]


def _message_json(message: rk.CaseList | pb.ReviewPacks) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _read_indicators(client: PartnerClient) -> pb.IndicatorsResponse:
    return client.indicators_response()


def _read_caselist(client: PartnerClient) -> rk.CaseList:
    return client.caselist()


def _read_review_packs(client: PartnerClient) -> pb.ReviewPacks:
    return client.review_packs()


SECTIONS: tuple[Section[Any], ...] = (
    Section("indicators", "Indicators against peers and the region", _read_indicators, render_indicators_answer,
            _values_json),
    Section("caselist", "Case-finding list", _read_caselist, render_caselist, _message_json),
    Section("reviews", "Avoidable-admission review packs", _read_review_packs, render_review_packs, _message_json),
)
