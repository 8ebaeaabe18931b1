// token-endpoint.mjs - a stand-in OAuth2 token endpoint for the
// client-assertion example: the client credentials grant with private_key_jwt
// client authentication (RFC 7523 2.2 and 3, RFC 7521 4.2), checked with the
// `jose` npm package against the client's JWK set. Not an authorization
// server: one client, tokens that grant nothing, state in memory.
//
// usage: node token-endpoint.mjs JWKS.json CLIENT_ID PORT_FILE
//
// Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) and
// answers POST /token: 200 {"access_token", "token_type": "Bearer",
// "expires_in"} for a valid assertion; 401 {"error": "invalid_client"} for an
// assertion that fails (signature, alg, typ, iss = sub = CLIENT_ID, aud = the
// endpoint's own URL, exp, a lifetime over 5 minutes, a jti seen before);
// 400 for a malformed request. One line per decision on standard output.
// jose is looked up in $KV_NPM_DIR (default /var/cache/libkeyvault-npm),
// where tests/install-deps.sh puts it.
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

const [jwksPath, clientId, portFile] = process.argv.slice(2);
if (!portFile) {
  console.error('usage: token-endpoint.mjs JWKS.json CLIENT_ID PORT_FILE');
  process.exit(2);
}
const dir = process.env.KV_NPM_DIR || '/var/cache/libkeyvault-npm';
const require = createRequire(`${dir}/node_modules/`);
const { jwtVerify, createLocalJWKSet } = require('jose');

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const MAX_BODY = 64 * 1024;
const MAX_LIFETIME = 300; // seconds from iat to exp
const keys = createLocalJWKSet(JSON.parse(readFileSync(jwksPath, 'utf8')));
const seen = new Map(); // jti -> exp: a replayed assertion is refused until it expires

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function token(form, audience) {
  if (form.get('grant_type') !== 'client_credentials')
    return [400, { error: 'unsupported_grant_type' }, 'grant_type is not client_credentials'];
  if (form.get('client_assertion_type') !== ASSERTION_TYPE || !form.get('client_assertion'))
    return [400, { error: 'invalid_request' }, 'no jwt-bearer client_assertion'];
  let payload, protectedHeader;
  try {
    ({ payload, protectedHeader } = await jwtVerify(form.get('client_assertion'), keys, {
      algorithms: ['ES256', 'ES384', 'PS256', 'RS256', 'EdDSA'],
      typ: 'JWT',
      issuer: clientId,
      subject: clientId,
      audience,
      requiredClaims: ['exp', 'iat', 'jti'],
      maxTokenAge: MAX_LIFETIME,
      clockTolerance: 0,
    }));
  } catch (e) {
    return [401, { error: 'invalid_client' }, `${e.code || 'error'}: ${e.message}`];
  }
  if (payload.exp - payload.iat > MAX_LIFETIME)
    return [401, { error: 'invalid_client' }, `lifetime ${payload.exp - payload.iat} s`];
  // the replay check keys on jti: it must be a non-empty string (a number or
  // an object would be compared some other way)
  if (typeof payload.jti !== 'string' || payload.jti.length === 0 || payload.jti.length > 256)
    return [401, { error: 'invalid_client' }, 'jti is not a string'];
  const now = Math.floor(Date.now() / 1000);
  for (const [jti, exp] of seen) if (exp < now) seen.delete(jti);
  if (seen.has(payload.jti))
    return [401, { error: 'invalid_client' }, 'jti replayed'];
  seen.set(payload.jti, payload.exp);
  return [200, {
    access_token: randomBytes(24).toString('base64url'),
    token_type: 'Bearer',
    expires_in: 300,
  }, `accepted jti ${payload.jti} alg ${protectedHeader.alg}`];
}

const server = createServer((req, res) => {
  const audience = `http://127.0.0.1:${server.address().port}/token`;
  if (req.method !== 'POST' || req.url !== '/token') {
    console.log(`${req.method} ${req.url}: 404`);
    return answer(res, 404, { error: 'not_found' });
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => {
    body += chunk;
    if (body.length > MAX_BODY) req.destroy();
  });
  req.on('end', async () => {
    const [status, reply, why] = await token(new URLSearchParams(body), audience);
    console.log(`POST /token: ${status} ${why}`);
    answer(res, status, reply);
  });
});
server.listen(0, '127.0.0.1', () => writeFileSync(portFile, `${server.address().port}\n`));
