"""/ops shows bounce and complaint rates per day against the 0.3% line; /ops/status.json
and the snapshot carry the last 24 hours."""

from __future__ import annotations

import re
from pathlib import Path

from papermail.bounces.events import store
from papermail.clock import utcnow
from papermail.db import session_scope
from papermail.models import BounceKind, BounceSource
from tests.unit.bounces.conftest import add_delivery, add_subscriber
from tests.unit.web.test_ops import AUTH, make_client, make_runtime


def test_the_dashboard_shows_todays_rates_against_the_line(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    now = utcnow()
    with session_scope(rt.sessions) as session:
        for n in range(50):
            add_delivery(session, add_subscriber(session, f"r{n}@example.org"), sent_at=now)
        complainer = add_subscriber(session, "c@example.org")
        store(
            session,
            kind=BounceKind.COMPLAINT,
            source=BounceSource.POSTMARK,
            subscriber_id=complainer.id,
            delivery_id=None,
            recipient=complainer.email,
            status=None,
            diagnostic="SpamComplaint: <script>alert(1)</script>",
            message="postmark:1",
            now=now,
        )
    client = make_client(rt)

    page = client.get("/ops", auth=AUTH).text
    data = client.get("/ops/status.json", auth=AUTH).json()

    assert 'id="bounces-title">Bounces and complaints</h2>' in page
    assert 'class="limit"' in page and ">0.30%</text>" in page
    today = now.date().isoformat()
    row = re.search(rf'<th scope="row">{today}</th>(.*?)</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num( bad)?">([^<]*)</td>', row[1])
    assert [value for _, value in cells] == ["50", "0", "0", "1", "0.00%", "2.00%"]
    assert cells[-1][0] == " bad"  # 2% complained: over the line
    # The latest events, the server's words escaped (they come from strangers).
    assert "<td>complaint</td>\n        <td>postmark</td>\n        <td>c@example.org</td>" in page
    assert "SpamComplaint: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    assert data["bounces_24h"]["complaints"] == 1 and data["bounces_24h"]["complaint_rate"] == 0.02
    rt.engine.dispose()
