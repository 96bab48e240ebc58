"""``citygov client``: the caller's side — make a key pair, send signed requests, verify signed responses.

Exit codes of ``client request``: 0 the server answered 2xx and its signature verified; 4 the server is
unreachable or answered 503; 5 the response signature did not verify (the body is not printed);
6 the request was refused (4xx: authentication, policy, quota, invalid query); 1 any other failure
(5xx); 2 bad usage or configuration. ``client verify`` exits 0 or 5.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer

from governance.api.client import RequestSigner, generate_key, load_private_key, write_key_pair
from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.cli.common import (
    EXIT_FAILURE,
    EXIT_UNAVAILABLE,
    EXIT_VERIFICATION_FAILED,
    console,
    emit_json,
    handle_errors,
    stdout,
)
from governance.errors import ConfigurationError, RetriableError, VerificationError

EXIT_REFUSED = 6
DEFAULT_URL = "http://127.0.0.1:8000"

app = typer.Typer(
    help="Call the signed data API: keygen, request (sign, send, verify the answer), verify. Exit codes: "
    "0 ok; 2 usage; 4 unreachable/503; 5 response signature invalid; 6 request refused (4xx); 1 other.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@app.command("keygen")
@handle_errors
def keygen_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for private.pem (0600), public.pem and "
                                      "public.jwk.json.", file_okay=False)],
    alg: Annotated[Literal["EdDSA", "ES256"], typer.Option(help="EdDSA (Ed25519) or ES256 (P-256).")] = "EdDSA",
    json_output: JsonOption = False,
) -> None:
    """Generate a key pair; give public.pem (or public.jwk.json) to the city's privacy officer."""
    written = write_key_pair(generate_key(alg), out)
    if json_output:
        emit_json(written)
        return
    stdout.print(written["kid"], highlight=False)
    console.print(f"{alg} key pair in {out}: keep private.pem secret; register public.pem "
                  f"(`citygov department add NAME --public-key {written['public_pem']}`)", highlight=False)


@app.command("request")
@handle_errors
def request_command(
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. POST.")],
    path: Annotated[str, typer.Argument(help="Path with its query, e.g. /v1/data/query or /v1/audit/entries?limit=5")],
    key: Annotated[Path, typer.Option("--key", help="Your private key (PEM).", exists=True, dir_okay=False)],
    kid: Annotated[str, typer.Option("--kid", help="Your key's kid as registered (printed by keygen).")],
    issuer: Annotated[str, typer.Option("--issuer", help="Your registered name (the 'iss').")],
    body: Annotated[Path | None, typer.Option("--body", help="Request body file (JSON), - for stdin.",
                                              allow_dash=True, dir_okay=False)] = None,
    url: Annotated[str, typer.Option("--url", help="The API's base URL.")] = DEFAULT_URL,
    audience: Annotated[str, typer.Option(help="The API's audience ('aud').")] = "citygov",
    jwks: Annotated[str | None, typer.Option(help="Response keys: a JWKS file or URL (default: the server's "
                                             "/.well-known/jwks.json).")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the server.")] = 30.0,
    json_output: JsonOption = False,
) -> None:
    """Sign and send one request, verify the response signature, print the body."""
    import httpx

    content = _read_body(body)
    signer = RequestSigner(load_private_key(key), kid, issuer, audience=audience)
    target = str(httpx.URL(url.rstrip("/") + (path if path.startswith("/") else f"/{path}")))
    token = signer.token(method, target, content)
    headers = {"Authorization": f"Bearer {token}"}
    if content:
        headers["Content-Type"] = "application/json"
    try:
        with httpx.Client(timeout=timeout) as client:
            keys = jwks_keys(_load_jwks(jwks or f"{url.rstrip('/')}/.well-known/jwks.json", client))
            response = client.request(method.upper(), target, content=content, headers=headers)
    except httpx.TransportError as exc:
        raise RetriableError(f"cannot reach {url}: {type(exc).__name__}") from None
    request_id = response.headers.get("x-request-id", "?")
    signature = response.headers.get(SIGNATURE_HEADER)
    if signature is None:
        raise VerificationError(f"HTTP {response.status_code} without a {SIGNATURE_HEADER} header "
                                f"(request {request_id})")
    header = verify_response(signature, response.content, keys)
    jti = orjson.loads(_segment(token))["jti"]
    if header.get("request_jti") not in (None, jti):
        raise VerificationError("the signed response answers another request (request_jti differs)")
    console.print(f"HTTP {response.status_code}; signature valid (kid {header['kid']}); request {request_id}"
                  + (f"; decision {header['decision_id']}" if "decision_id" in header else ""), highlight=False)
    if json_output:
        emit_json({"status": response.status_code, "request_id": request_id, "signature": header,
                   "body": _json_or_text(response.content)})
    else:
        sys.stdout.write(response.text + ("\n" if not response.text.endswith("\n") else ""))
    if response.status_code == 503:
        raise typer.Exit(EXIT_UNAVAILABLE)
    if 400 <= response.status_code < 500:
        raise typer.Exit(EXIT_REFUSED)
    if response.status_code >= 500:
        raise typer.Exit(EXIT_FAILURE)


@app.command("verify")
@handle_errors
def verify_command(
    body_file: Annotated[Path, typer.Argument(help="The response body exactly as received.", exists=True,
                                              dir_okay=False)],
    signature: Annotated[str, typer.Option("--signature", help=f"The {SIGNATURE_HEADER} header value.")],
    jwks: Annotated[str, typer.Option("--jwks", help="The service's JWKS: a file or an http(s) URL.")],
    json_output: JsonOption = False,
) -> None:
    """Check a response body against its detached signature; exit 5 if it does not verify."""
    import httpx

    with httpx.Client(timeout=30) as client:
        keys = jwks_keys(_load_jwks(jwks, client))
    header = verify_response(signature, body_file.read_bytes(), keys)
    if json_output:
        emit_json({"valid": True, "header": header})
        return
    stdout.print(f"[green]valid[/green]: signed by {header['kid']} at {header.get('iat')}"
                 + (f", decision {header['decision_id']}" if "decision_id" in header else ""), highlight=False)


def _read_body(body: Path | None) -> bytes:
    if body is None:
        return b""
    if str(body) == "-":
        return sys.stdin.buffer.read()
    try:
        return body.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {body}: {type(exc).__name__}") from None


def _load_jwks(source: str, client: Any) -> dict[str, Any]:
    try:
        if source.startswith(("http://", "https://")):
            response = client.get(source)
            response.raise_for_status()
            data = response.content
        else:
            data = Path(source).read_bytes()
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise VerificationError(f"{source} is not a JSON JWK set") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {source}: {type(exc).__name__}") from None
    except Exception as exc:  # httpx errors: unreachable, or not 2xx
        raise RetriableError(f"cannot fetch the JWK set from {source}: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise VerificationError(f"{source} is not a JWK set")
    return value


def _segment(token: str) -> bytes:
    from governance.api.jose import b64url_decode

    return b64url_decode(token.split(".")[1])


def _json_or_text(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", errors="replace")


__all__ = ["EXIT_REFUSED", "EXIT_VERIFICATION_FAILED", "app"]
