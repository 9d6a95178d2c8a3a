"""`make fuzz`: malformed inputs of every wire form into a hub on this machine, with valid traffic in
between; every input accounted for.

    python tools/fuzz.py                                  # 100,000 malformed inputs per form
    python tools/fuzz.py --per-form 1000 --seed 7 --forms hl7,fhir
    python tools/fuzz.py --seed 7 --dump hl7:1234 input.bin   # one input's bytes, to replay by hand

The four wire forms: CareEvent protobuf and canonical JSON records on the provider topic (through
the SDK), HL7 v2 ADT over MLLP, and FHIR message Bundles over HTTPS with mutual TLS. Each
malformed input is a valid message mutated by a generator seeded with ``--seed`` (carehub.fuzz):
the same seed gives the same inputs. After every ``--valid-every`` malformed inputs comes a valid
one, which must be accepted.

Each form is sent in parts of ``--part`` malformed inputs (10,000), each part to an embedded broker
and a hub of its own (ingest, and the door the form goes through, as child processes with their
logs in a temporary folder): the embedded broker keeps every record in memory, and reading a
topic back costs more the longer it is. For each form it prints: crashes,
the outcome of every malformed input (accepted, degraded by problem, dead-lettered by reason,
dropped as a duplicate, refused at the door, no message read), the answers at the door, inputs
unaccounted for, and valid traffic sent and lost. The exit status is 0 only when crashes,
unaccounted inputs and valid traffic lost are all 0 and every input was sent within
``--max-minutes``. Only processes this script started are stopped, by process id.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from carehub.fuzz.campaign import (  # noqa: E402
    FormReport,
    Plan,
    Progress,
    format_report,
    run_forms,
    start_services,
    write_input,
)
from carehub.fuzz.corpus import FORMS, Form, total  # noqa: E402
from carehub.harness import LocalHub  # noqa: E402
from carehub.kafka.broker import EmbeddedBroker  # noqa: E402
from carehub.kafka.read import ReadTimeout  # noqa: E402

SEND_SHARE = 0.75  # of each form's time: the rest is for ingest to finish and the accounting


def parse_forms(text: str) -> tuple[Form, ...]:
    forms = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise argparse.ArgumentTypeError(f"forms are {', '.join(FORMS)} (got {text!r})")
    return cast(tuple[Form, ...], forms)


def run_part(folder: Path, plan: Plan, seconds: float, tick: Progress, log_level: str) -> FormReport:
    """One part of one form's run on a broker and hub of its own, started and stopped here."""
    (form,) = plan.forms
    place = folder / f"{form}-{plan.first}"
    place.mkdir(parents=True)
    started = time.monotonic()
    with EmbeddedBroker(log_path=place / "tansu.log") as broker:
        hub = LocalHub(broker.bootstrap, place)
        hub.create_topics()
        try:
            doors = start_services(hub, [form], log_level)
            starting = time.monotonic() - started
            (report,) = run_forms(hub, doors, plan, started + seconds * SEND_SHARE, lambda _form, _n: tick,
                                  settle_timeout_s=max(60.0, seconds * (1 - SEND_SHARE)))
            report.phases = {"starting the services": starting, **report.phases}
            report.elapsed_s += starting
        except (AssertionError, ReadTimeout) as exc:  # a service that did not start; a read cut short
            report = FormReport(form, stopped_early=True)
            report.crashes[str(exc).splitlines()[0][:300]] += 1
        finally:
            hub.stop_all()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--per-form", type=int, default=100_000, help="malformed inputs per form (default 100,000)")
    parser.add_argument("--seed", type=int, default=1, help="the generator's seed (default 1)")
    parser.add_argument("--forms", type=parse_forms, default=FORMS, help="comma-separated: protobuf,json,hl7,fhir")
    parser.add_argument("--valid-every", type=int, default=10, help="a valid input after every N malformed ones")
    parser.add_argument("--part", type=int, default=10_000,
                        help="malformed inputs per broker and hub (a multiple of --valid-every; default 10,000)")
    parser.add_argument("--max-minutes", type=float, default=40.0, help="stop sending when this runs out")
    parser.add_argument("--log-level", default="error", help="the services' log level (default error)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) at the end")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dump", nargs=2, metavar=("FORM:INDEX", "PATH"),
                        help="write one input's bytes to PATH and exit")
    args = parser.parse_args(argv)
    forms: tuple[Form, ...] = args.forms
    if args.part <= 0 or (args.valid_every and args.part % args.valid_every):
        parser.error("--part must be a positive multiple of --valid-every")

    if args.dump:
        form, _, index = args.dump[0].partition(":")
        inp = write_input(Path(args.dump[1]), parse_forms(form)[0], args.seed, int(index), args.valid_every)
        print(f"{inp.form}:{inp.index} ({'valid' if inp.valid else 'malformed'}, {len(inp.payload):,} bytes, "
              f"content type {inp.content_type!r}, path {inp.path!r}): {'; '.join(inp.mutations)}")
        return 0

    command = ["python", "tools/fuzz.py", "--per-form", str(args.per_form), "--seed", str(args.seed), "--forms",
               ",".join(forms), "--valid-every", str(args.valid_every), "--part", str(args.part),
               "--max-minutes", f"{args.max_minutes:g}"]
    print(f"command: {shlex.join([sys.executable, *sys.argv])}", flush=True)
    print(f"same as: {shlex.join(command)}", flush=True)
    started = time.monotonic()
    end = started + args.max_minutes * 60
    reports: list[FormReport] = []
    folder = Path(tempfile.mkdtemp(prefix="carehub-fuzz-"))
    try:
        for n, form in enumerate(forms):
            form_end = time.monotonic() + (end - time.monotonic()) / (len(forms) - n)
            report = FormReport(form)
            bar = tqdm(total=total(args.per_form, args.valid_every), desc=form, unit=" inputs", mininterval=2.0,
                       disable=args.no_progress, file=sys.stderr)
            try:
                # in parts of their own broker and hub: the embedded broker keeps every record in
                # memory, and its fetches slow down as a partition grows (docs/embedded-broker.md)
                for first in range(0, args.per_form, args.part):
                    parts_left = -(-(args.per_form - first) // args.part)
                    plan = Plan(args.seed, min(args.part, args.per_form - first), args.valid_every, (form,), first)
                    report.add(run_part(folder, plan, (form_end - time.monotonic()) / parts_left, bar.update,
                                        args.log_level))
                    if report.stopped_early:
                        break
            finally:
                bar.close()
            reports.append(report)
            print("\n" + format_report(report, args.seed), flush=True)
    finally:
        if args.keep:
            print(f"logs and broker logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    elapsed = time.monotonic() - started
    print(f"\n{'form':<9} {'inputs':>9} {'crashes':>8} {'unaccounted':>12} {'valid sent':>11} {'valid lost':>11} "
          f"{'elapsed':>9}")
    for r in reports:
        print(f"{r.form:<9} {r.inputs:>9,} {sum(r.crashes.values()):>8,} {len(r.unaccounted):>12,} "
              f"{r.valid_sent:>11,} {len(r.valid_lost):>11,} {r.elapsed_s:>8,.0f}s")
    ok = all(r.ok for r in reports) and len(reports) == len(forms)
    print(f"total {elapsed / 60:.1f} min; {'OK' if ok else 'FAILED'}: crashes, unaccounted and valid lost must be 0"
          f"{'' if ok else ', and every input sent'}")
    print(f"command: {shlex.join(command)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
