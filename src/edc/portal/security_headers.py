"""Headers every response carries, so a page cannot be framed, sniffed into a script, or made to
run code from anywhere but the platform itself.

The Content-Security-Policy allows only the platform's own scripts and styles: the templates have
no inline script (data travels in ``<script type="application/json">`` blocks, which are never
run) and no inline style. ``/docs`` (the vendored swagger-ui) also needs inline styles, which its
widgets set; scripts stay the platform's own there too. HSTS is sent only where cookies are
``Secure`` (production behind HTTPS): a loopback portal over plain HTTP must not pin HTTPS.

The portal wraps its whole application in it (``edc.portal.app.PortalApp``), outside Starlette's
own answer to an unhandled exception: a 500 carries the headers too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DOCS_POLICY = POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
DOCS_PATH = "/docs"
HSTS = "max-age=31536000; includeSubDomains"


class SecurityHeaders:
    """Pure ASGI middleware (it must not buffer streamed bodies, such as live events)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"] == DOCS_PATH else POLICY
        extra = [
            (b"content-security-policy", policy.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
        ]
        if self.hsts:
            extra.append((b"strict-transport-security", HSTS.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers.extend((name, value) for name, value in extra if name not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
