// A department's client in another language: signs citygov requests and verifies citygov responses
// with the `jose` npm package only (docs/signed-requests.md). Reads one JSON command on stdin:
//   {"op": "sign", "alg": "EdDSA"|"ES256", "method", "url", "body" (text), "issuer", "audience"}
//     -> {"jwk", "kid", "token"}   (a fresh key pair each time; kid = RFC 7638 thumbprint by jose)
//   {"op": "verify", "jwks", "signature", "body_b64"}  -> {"ok": true, "header"} or {"ok": false, "error"}
import { createHash, randomUUID } from "node:crypto";
import {
  SignJWT, calculateJwkThumbprint, exportJWK, flattenedVerify, generateKeyPair, importJWK,
} from "jose";

const input = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => { data += chunk; });
  process.stdin.on("end", () => resolve(data));
}));

function b64url(buffer) {
  return Buffer.from(buffer).toString("base64url");
}

if (input.op === "sign") {
  const { publicKey, privateKey } = await generateKeyPair(input.alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk, "sha256");
  const body = Buffer.from(input.body ?? "", "utf8");
  const htu = new URL(input.url).href;              // the URL exactly as fetch() would send it
  const token = await new SignJWT({
    htm: input.method.toUpperCase(),
    htu,
    bsh: createHash("sha256").update(body).digest("base64url"),
  })
    .setProtectedHeader({ alg: input.alg, kid, typ: "JWT" })
    .setIssuer(input.issuer)
    .setAudience(input.audience)
    .setIssuedAt()
    .setExpirationTime("60s")
    .setJti(randomUUID())
    .sign(privateKey);
  console.log(JSON.stringify({ jwk, kid, token }));
} else if (input.op === "verify") {
  const [protectedB64, empty, signature] = input.signature.split(".");
  try {
    if (empty !== "") throw new Error("not a detached JWS");
    const header = JSON.parse(Buffer.from(protectedB64, "base64url").toString("utf8"));
    const jwk = input.jwks.keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new Error("unknown kid");
    const key = await importJWK(jwk, "EdDSA");
    const payload = b64url(Buffer.from(input.body_b64, "base64"));
    const result = await flattenedVerify({ protected: protectedB64, payload, signature }, key,
      { algorithms: ["EdDSA"] });
    console.log(JSON.stringify({ ok: true, header: result.protectedHeader }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: String(error && error.code || error) }));
  }
} else {
  console.error(`unknown op ${input.op}`);
  process.exit(2);
}
