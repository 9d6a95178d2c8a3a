"""A practice's dashboard page: a small web server that is a partner client of the gateway.

It reads, with the practice's own certificate, what the gateway already gives that practice
(its entitled indicator values, its case-finding list) and renders one HTML page with inline
SVG charts, so the page needs nothing from the network but this server. Pure parts (which
figures to show, chart geometry, HTML) are separate from the gRPC reads and the HTTP server,
and are tested without either:

- ``figures.py``: from indicator values to what one indicator's row shows;
- ``charts.py``: funnel-plot and trend geometry, and their SVG;
- ``page.py``: the page's HTML, one renderer per section, and the error page;
- ``sections.py``: the sections, each a gateway read and its renderer;
- ``source.py``: the reads, through :class:`carehub.partner.PartnerClient`, cached briefly;
- ``server.py``: the HTTP server (starlette on uvicorn) and ``carehub dashboard``.
"""
