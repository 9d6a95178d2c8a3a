"""Screenshot a running practice dashboard page with headless chromium: the README's docs/img/dashboard.png.

Made from `make run` (which serves practice B86001's page at http://127.0.0.1:8080/) once it says
"steady state":

    python tools/practice_page_png.py --url http://127.0.0.1:8080/ --out docs/img/dashboard.png

(`make practice-page-png`). It refuses a page that is not the practice's figures yet (an error
page, or one without a funnel plot), so a picture of an empty or failed page is not written.
Needs Debian's chromium (`make chromium` installs it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/", help="the page (default http://127.0.0.1:8080/)")
    parser.add_argument("--out", default="docs/img/dashboard.png", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args()
    try:
        with urllib.request.urlopen(args.url, timeout=60) as resp:
            body = resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{args.url} answers {exc.code}: is the gateway up (see the page)?") from None
    except OSError as exc:
        raise SystemExit(f"cannot load {args.url}: {exc} (is `make run` running?)") from None
    if 'class="funnel"' not in body:
        raise SystemExit(f"{args.url} has no funnel plot yet: wait until `make run` says steady state")
    exe = shutil.which("chromium")
    if exe is None:
        raise SystemExit("chromium not found: `make chromium` installs it (Debian package chromium)")
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="carehub-chromium-") as profile:
        result = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={args.width},{args.height}",
             "--virtual-time-budget=5000", f"--screenshot={out}", args.url],
            capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not out.exists():
        raise SystemExit(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    print(f"wrote {out} ({args.width}x{args.height}) from {args.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
