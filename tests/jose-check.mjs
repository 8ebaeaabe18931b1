// jose-check.mjs - the independent JOSE implementation for tests/jose.sh:
// the `jose` npm package (5.9.6) checks the tokens and keys libkeyvault
// makes, and makes the tokens, keys and hostile tokens libkeyvault must
// verify or refuse. The package is looked up in $KV_NPM_DIR (default
// /var/cache/libkeyvault-npm), where tests/install-deps.sh puts it.
//
// usage:
//   node jose-check.mjs verify TOKENFILE JWKSFILE [--alg ALG] [--aud URL]
//        [--client-id ID] [--ttl S] [--claims FILE] [--x5c] [--plain]
//        [--evidence FILE | --evidence-hash FILE] [--signed FROM:TO]
//     jwtVerify against the JWKS, then the checks below (with --plain,
//     jwtVerify alone; with --signed, as of TO, and iat within FROM..TO,
//     the seconds around the token's making); prints one JSON line {alg, kid, jti} and exits 0,
//     or "rejected: WHY" and exits 1
//   node jose-check.mjs verify-batch FILE
//     one verify per line of FILE (DESCRIPTION, TOKENFILE, JWKSFILE,
//     OPTIONS..., separated by tabs), one result line each: ok/not ok, TAB, the
//     description, TAB, the jti or the reason
//   node jose-check.mjs sign ALG CLAIMSFILE OUTDIR
//     a fresh key pair of jose's own; writes OUTDIR/ALG.jwks (kid, alg, use),
//     OUTDIR/ALG-bare.jwks (the required members only), OUTDIR/ALG.pem
//     (SPKI), OUTDIR/ALG.jwt (header alg, kid, typ) and OUTDIR/ALG-nokid.jwt
//   node jose-check.mjs jwk JWKFILE PEMFILE
//     importJWK of the JWK and the PEM public key are the same key (their
//     SPKI DER), kid = calculateJwkThumbprint, use sig, alg fits the key
//   node jose-check.mjs corpus DIR NOW
//     DIR/keys.jwks (a P-256 and an RSA key), DIR/victim.pem (the P-256 one),
//     DIR/NAME.jwt for each hostile or control token, DIR/cases (the names)
// Exit 2 on a usage error.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate, createHash, createPublicKey, sign as cryptoSign, randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';

const dir = process.env.KV_NPM_DIR || '/var/cache/libkeyvault-npm';
const require = createRequire(`${dir}/node_modules/`);
const jose = require('jose');

const b64u = (buf) => Buffer.from(buf).toString('base64url');
const json = (file) => JSON.parse(readFileSync(file, 'utf8'));
const usage = (msg) => { console.error(`jose-check: ${msg}`); process.exit(2); };

function options(args, known) {
  const out = {};
  for (let i = 0; i < args.length; i++) {
    const name = args[i].replace(/^--/, '');
    if (!args[i].startsWith('--') || !(name in known)) usage(`unknown option ${args[i]}`);
    if (known[name]) {
      if (i + 1 >= args.length) usage(`${args[i]} needs a value`);
      out[name] = args[++i];
    } else {
      out[name] = true;
    }
  }
  return out;
}

// the SPKI DER of a key (a KeyObject from jose's node runtime), as hex
const spki = (key) => (key.type === 'public' ? key : createPublicKey(key)).export({ type: 'spki', format: 'der' }).toString('hex');
const derToPem = (b64) => `-----BEGIN CERTIFICATE-----\n${b64.match(/.{1,64}/g).join('\n')}\n-----END CERTIFICATE-----\n`;

// the alg a key type takes by our design's table
function algsFor(jwk) {
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return ['ES256'];
  if (jwk.kty === 'EC' && jwk.crv === 'P-384') return ['ES384'];
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return ['EdDSA'];
  if (jwk.kty === 'RSA') return ['PS256', 'RS256'];
  return [];
}

// The checks of `verify`: the result {alg, kid, jti}, or an exception.
async function verifyToken(args) {
  if (args.length < 2) usage('verify TOKENFILE JWKSFILE [options]');
  const token = readFileSync(args[0], 'utf8').trim();
  const jwks = json(args[1]);
  const o = options(args.slice(2), {
    alg: 1, aud: 1, 'client-id': 1, ttl: 1, claims: 1, x5c: 0, plain: 0, evidence: 1, 'evidence-hash': 1,
    signed: 1,
  });
  // --signed FROM:TO, the clock (seconds) before and after the token was
  // made: iat must fall in it, and the token is checked as of TO, so that a
  // slow machine's queue of tokens verified later does not expire them
  let signed = null;
  if (o.signed) {
    const m = /^(\d+):(\d+)$/.exec(o.signed);
    if (!m) usage('--signed FROM:TO (seconds since the epoch)');
    signed = { from: Number(m[1]), to: Number(m[2]) };
  }
  if (o.plain) {
    // jose's own checks alone: jwtVerify with the key set, nothing of ours
    const plain = o.aud ? { audience: o.aud } : {};
    if (signed) plain.currentDate = new Date(signed.to * 1000);
    const { payload } = await jose.jwtVerify(token, jose.createLocalJWKSet(jwks), plain);
    return { jti: payload.jti ?? null };
  }
  const header = jose.decodeProtectedHeader(token);
  if (header.typ !== 'JWT') throw new Error(`typ is ${JSON.stringify(header.typ)}, not "JWT"`);
  if (o.alg && header.alg !== o.alg) throw new Error(`alg is ${header.alg}, wanted ${o.alg}`);
  if (typeof header.kid !== 'string') throw new Error('no kid in the header');
  const matches = jwks.keys.filter((k) => k.kid === header.kid);
  if (matches.length !== 1) throw new Error(`${matches.length} JWKs with kid ${header.kid}`);
  const jwk = matches[0];
  const thumb = await jose.calculateJwkThumbprint(jwk, 'sha256');
  if (thumb !== header.kid) throw new Error(`kid ${header.kid} is not the JWK thumbprint ${thumb}`);
  if (!algsFor(jwk).includes(header.alg)) throw new Error(`alg ${header.alg} does not fit the JWK`);
  const checks = { typ: 'JWT', algorithms: [header.alg] };
  if (signed) checks.currentDate = new Date(signed.to * 1000);
  if (o.aud) checks.audience = o.aud;
  if (o['client-id']) { checks.issuer = o['client-id']; checks.subject = o['client-id']; }
  const { payload } = await jose.jwtVerify(token, jose.createLocalJWKSet(jwks), checks);
  if (o['client-id']) {
    if (payload.aud !== o.aud) throw new Error(`aud is ${JSON.stringify(payload.aud)}, not the token endpoint`);
    if (!Number.isInteger(payload.iat) || !Number.isInteger(payload.exp)) throw new Error('iat or exp is not an integer');
    if (payload.exp - payload.iat !== Number(o.ttl)) throw new Error(`exp - iat = ${payload.exp - payload.iat}, wanted ${o.ttl}`);
    if (signed) {
      if (payload.iat < signed.from || payload.iat > signed.to) {
        throw new Error(`iat ${payload.iat} is not when the token was made (${signed.from}..${signed.to})`);
      }
    } else {
      const now = Math.floor(Date.now() / 1000);
      if (Math.abs(payload.iat - now) > 30) throw new Error(`iat ${payload.iat} is not now (${now})`);
    }
    if (typeof payload.jti !== 'string' || Buffer.from(payload.jti, 'base64url').length !== 16 ||
        b64u(Buffer.from(payload.jti, 'base64url')) !== payload.jti) throw new Error('jti is not 16 bytes base64url');
    if ('nbf' in payload) throw new Error('nbf in a client assertion');
  }
  if (o.claims && !isDeepStrictEqual(payload, json(o.claims))) throw new Error('the claims differ from the claims file');
  if (o.evidence && !isDeepStrictEqual(payload.kv_evidence, json(o.evidence))) {
    throw new Error('kv_evidence is not the evidence document');
  }
  if (o['evidence-hash']) {
    const want = b64u(createHash('sha256').update(readFileSync(o['evidence-hash'])).digest());
    if (payload.kv_evidence_s256 !== want) throw new Error(`kv_evidence_s256 is ${payload.kv_evidence_s256}, not ${want}`);
    if ('kv_evidence' in payload) throw new Error('kv_evidence beside its hash');
  }
  if (o.x5c) {
    if (!Array.isArray(header.x5c) || header.x5c.length === 0) throw new Error('no x5c in the header');
    const leaf = await jose.importX509(derToPem(header.x5c[0]), header.alg);
    await jose.jwtVerify(token, leaf, checks);
    if (spki(leaf) !== spki(await jose.importJWK(jwk, header.alg))) throw new Error('the x5c leaf is not the JWK\'s key');
    const certs = header.x5c.map((c) => new X509Certificate(Buffer.from(c, 'base64')));
    for (let i = 0; i + 1 < certs.length; i++) {
      if (!certs[i].checkIssued(certs[i + 1]) || !certs[i].verify(certs[i + 1].publicKey)) {
        throw new Error(`x5c[${i}] is not issued by x5c[${i + 1}]`);
      }
    }
  } else if ('x5c' in header) {
    throw new Error('x5c in a header that was not asked for one');
  }
  return { alg: header.alg, kid: header.kid, jti: payload.jti ?? null };
}

async function verify(args) {
  console.log(JSON.stringify(await verifyToken(args)));
}

// verify-batch FILE: one `verify` per line of FILE, each the fields
// DESCRIPTION, TOKENFILE, JWKSFILE, OPTIONS... separated by tabs; prints per line
// "ok<TAB>DESCRIPTION<TAB>JTI" or "not ok<TAB>DESCRIPTION<TAB>WHY"
// (one node process for many tokens)
async function verifyBatch(args) {
  if (args.length !== 1) usage('verify-batch FILE');
  for (const line of readFileSync(args[0], 'utf8').split('\n').filter((l) => l)) {
    const [desc, ...rest] = line.split('\t');
    try {
      const r = await verifyToken(rest);
      console.log(`ok\t${desc}\t${r.jti ?? ''}`);
    } catch (err) {
      console.log(`not ok\t${desc}\t${err.code ? `${err.code}: ` : ''}${err.message}`);
    }
  }
}

async function newKey(alg) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true, modulusLength: 2048 });
  const bare = await jose.exportJWK(publicKey);
  const kid = await jose.calculateJwkThumbprint(bare, 'sha256');
  return { publicKey, privateKey, bare, kid, jwk: { ...bare, kid, alg, use: 'sig' } };
}

async function signCmd(args) {
  if (args.length !== 3) usage('sign ALG CLAIMSFILE OUTDIR');
  const [alg, claimsFile, out] = args;
  const claims = json(claimsFile);
  const k = await newKey(alg);
  writeFileSync(`${out}/${alg}.jwks`, JSON.stringify({ keys: [k.jwk] }));
  writeFileSync(`${out}/${alg}-bare.jwks`, JSON.stringify({ keys: [k.bare] }));
  writeFileSync(`${out}/${alg}.pem`, await jose.exportSPKI(k.publicKey));
  const token = await new jose.SignJWT(claims).setProtectedHeader({ alg, kid: k.kid, typ: 'JWT' }).sign(k.privateKey);
  const nokid = await new jose.SignJWT(claims).setProtectedHeader({ alg }).sign(k.privateKey);
  writeFileSync(`${out}/${alg}.jwt`, `${token}\n`);
  writeFileSync(`${out}/${alg}-nokid.jwt`, `${nokid}\n`);
  console.log(token);
}

async function jwkCmd(args) {
  if (args.length !== 2) usage('jwk JWKFILE PEMFILE');
  const jwk = json(args[0]);
  const alg = algsFor(jwk)[0];
  if (!alg) throw new Error(`a JWK of kty ${jwk.kty} crv ${jwk.crv} is none of ours`);
  if (jwk.alg !== undefined && !algsFor(jwk).includes(jwk.alg)) throw new Error(`alg ${jwk.alg} does not fit the key`);
  if (jwk.use !== 'sig') throw new Error(`use is ${JSON.stringify(jwk.use)}, not "sig"`);
  if ('d' in jwk || 'p' in jwk) throw new Error('the JWK carries private members');
  if ('x5c' in jwk) throw new Error('the JWK carries x5c');
  const thumb = await jose.calculateJwkThumbprint(jwk, 'sha256');
  if (jwk.kid !== thumb) throw new Error(`kid ${jwk.kid} is not the thumbprint ${thumb}`);
  const fromJwk = await jose.importJWK(jwk, jwk.alg ?? alg);
  const fromPem = await jose.importSPKI(readFileSync(args[1], 'utf8'), jwk.alg ?? alg);
  if (spki(fromJwk) !== spki(fromPem)) throw new Error('the JWK and the PEM public key differ');
  console.log(`same key: ${jwk.kty} ${jwk.crv ?? `${Buffer.from(jwk.n, 'base64url').length * 8} bits`} kid ${thumb}`);
}

// ---- the negative corpus ------------------------------------------------------
// A compact JWS over the exact header and payload text given, signed with
// node's crypto (for what jose will not make: raw or duplicate members).
function handSign(headerText, payloadText, key, alg) {
  const input = `${b64u(headerText)}.${b64u(payloadText)}`;
  let sig;
  if (alg === 'ES256' || alg === 'ES384') {
    sig = cryptoSign(alg === 'ES256' ? 'sha256' : 'sha384', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  } else if (alg === 'ES256-DER') {
    sig = cryptoSign('sha256', Buffer.from(input), key);
  } else if (alg === 'RS256') {
    sig = cryptoSign('sha256', Buffer.from(input), key);
  } else if (alg === 'none') {
    sig = Buffer.alloc(0);
  } else {
    throw new Error(`handSign: ${alg}`);
  }
  return `${input}.${b64u(sig)}`;
}

async function corpus(args) {
  if (args.length !== 2) usage('corpus DIR NOW');
  const [out, nowText] = args;
  const now = Number(nowText);
  const AUD = 'https://as.example/token';
  const ISS = 'client-1';
  const victim = await newKey('ES256');
  const victimRsa = await newKey('PS256');
  const attacker = await newKey('ES256');
  const attackerRsa = await newKey('RS256');
  const attacker384 = await newKey('ES384');
  const attackerPs = await newKey('PS256');
  writeFileSync(`${out}/keys.jwks`, JSON.stringify({ keys: [victim.jwk, victimRsa.jwk] }));
  writeFileSync(`${out}/victim.pem`, await jose.exportSPKI(victim.publicKey));
  const victimPem = await jose.exportSPKI(victim.publicKey);
  const victimRsaPem = await jose.exportSPKI(victimRsa.publicKey);

  const claims = (extra = {}) => ({ iss: ISS, sub: ISS, aud: AUD, iat: now, exp: now + 300, jti: b64u(randomBytes(16)), ...extra });
  const cases = [];
  const put = (name, token) => { writeFileSync(`${out}/${name}.jwt`, `${token}\n`); cases.push(name); };
  const jwt = (c, header, key, opts) => new jose.SignJWT(c).setProtectedHeader(header).sign(key, opts);
  const vh = (alg = 'ES256') => ({ alg, kid: victim.kid, typ: 'JWT' });
  const parts = (t) => t.split('.');

  // controls: these must verify, so the refusals below are the checks' doing
  const good = await jwt(claims(), vh(), victim.privateKey);
  put('good', good);
  put('good-rsa', await jwt(claims(), { alg: 'PS256', kid: victimRsa.kid, typ: 'JWT' }, victimRsa.privateKey));
  put('good-aud-array', await jwt(claims({ aud: ['https://other.example/', AUD] }), vh(), victim.privateKey));
  put('skew-exp-inside', await jwt(claims({ iat: now - 330, exp: now - 30 }), vh(), victim.privateKey));
  put('skew-nbf-inside', await jwt(claims({ nbf: now + 30 }), vh(), victim.privateKey));
  // the size limit, 64 KiB: the longest token up to it, and the shortest over it
  const sized = async (fits) => {
    const base = claims();
    const len = (n) => b64u(JSON.stringify(vh())).length + 1 +
      b64u(JSON.stringify({ ...base, pad: 'a'.repeat(n) })).length + 1 + 86;
    let n = Math.floor(((65536 - len(0)) * 3) / 4) - 8;
    while (len(n + 1) <= 65536) n++;
    if (!fits) n++;
    return jwt({ ...base, pad: 'a'.repeat(n) }, vh(), victim.privateKey);
  };
  put('big-inside', await sized(true));

  // alg none, in its spellings, with and without the victim's kid
  const [gh, gp, gs] = parts(good);
  put('alg-none', handSign(JSON.stringify({ alg: 'none', kid: victim.kid, typ: 'JWT' }), JSON.stringify(claims()), null, 'none'));
  put('alg-none-nokid', handSign(JSON.stringify({ alg: 'none' }), JSON.stringify(claims()), null, 'none'));
  put('alg-None', handSign(JSON.stringify({ alg: 'None', kid: victim.kid }), JSON.stringify(claims()), null, 'none'));
  put('alg-none-sig', `${b64u(JSON.stringify({ alg: 'none', kid: victim.kid, typ: 'JWT' }))}.${gp}.${gs}`);
  put('alg-missing', handSign(JSON.stringify({ kid: victim.kid, typ: 'JWT' }), JSON.stringify(claims()), victim.privateKey, 'ES256'));

  // the algorithm switched in the header: the victim's P-256 kid with another alg,
  // signed with a key of that alg; and the victim's own signature relabelled
  put('switch-RS256', await jwt(claims(), vh('RS256'), attackerRsa.privateKey));
  put('switch-PS256', await jwt(claims(), vh('PS256'), attackerPs.privateKey));
  put('switch-ES384', await jwt(claims(), vh('ES384'), attacker384.privateKey));
  put('switch-relabel-ES384', `${b64u(JSON.stringify(vh('ES384')))}.${gp}.${gs}`);
  put('switch-EdDSA', `${b64u(JSON.stringify(vh('EdDSA')))}.${gp}.${gs}`);
  put('switch-ES512', `${b64u(JSON.stringify(vh('ES512')))}.${gp}.${gs}`);
  // the RSA key's kid with RS256 where its JWK says PS256
  put('switch-rsa-RS256', await jwt(claims(), { alg: 'RS256', kid: victimRsa.kid, typ: 'JWT' }, attackerRsa.privateKey));

  // HS256 keyed with the public key's text (PEM and JWK), the classic confusion
  const hs = (secret, kid) => jwt(claims(), { alg: 'HS256', kid, typ: 'JWT' }, new TextEncoder().encode(secret));
  put('hs256-pem', await hs(victimPem, victim.kid));
  put('hs256-pem-rsa', await hs(victimRsaPem, victimRsa.kid));
  put('hs256-jwk', await hs(JSON.stringify(victim.jwk), victim.kid));
  put('hs256-jwk-rsa', await hs(JSON.stringify(victimRsa.jwk), victimRsa.kid));
  put('hs384-pem', await jwt(claims(), { alg: 'HS384', kid: victim.kid, typ: 'JWT' }, new TextEncoder().encode(victimPem)));
  // and with no kid, against the PEM alone (--pubkey)
  put('hs256-pem-nokid', await jwt(claims(), { alg: 'HS256', typ: 'JWT' }, new TextEncoder().encode(victimPem)));

  // time
  put('expired', await jwt(claims({ iat: now - 3900, exp: now - 3600 }), vh(), victim.privateKey));
  put('skew-exp-outside', await jwt(claims({ iat: now - 420, exp: now - 120 }), vh(), victim.privateKey));
  put('not-yet-valid', await jwt(claims({ nbf: now + 3600 }), vh(), victim.privateKey));
  put('skew-nbf-outside', await jwt(claims({ nbf: now + 120 }), vh(), victim.privateKey));
  put('no-exp', await jwt({ iss: ISS, sub: ISS, aud: AUD, iat: now, jti: 'x' }, vh(), victim.privateKey));
  put('exp-string', handSign(JSON.stringify(vh()), JSON.stringify(claims({ exp: String(now + 300) })), victim.privateKey, 'ES256'));

  // audience and issuer
  put('wrong-aud', await jwt(claims({ aud: 'https://evil.example/token' }), vh(), victim.privateKey));
  put('wrong-aud-array', await jwt(claims({ aud: ['https://evil.example/token', 'x'] }), vh(), victim.privateKey));
  put('wrong-aud-prefix', await jwt(claims({ aud: `${AUD}/x` }), vh(), victim.privateKey));
  put('wrong-iss', await jwt(claims({ iss: 'client-2' }), vh(), victim.privateKey));

  // tampering with a good token
  const otherPayload = b64u(JSON.stringify({ ...JSON.parse(Buffer.from(gp, 'base64url')), sub: 'admin' }));
  put('tampered-payload', `${gh}.${otherPayload}.${gs}`);
  const flip = (s, i) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  put('tampered-signature', `${gh}.${gp}.${flip(gs, 10)}`);
  put('tampered-header', `${b64u(JSON.stringify({ ...vh(), typ: 'at+jwt' }))}.${gp}.${gs}`);
  put('signature-der', handSign(JSON.stringify(vh()), JSON.stringify(claims()), victim.privateKey, 'ES256-DER'));
  put('signature-short', `${gh}.${gp}.${b64u(Buffer.from(gs, 'base64url').subarray(0, 63))}`);
  put('signature-empty', `${gh}.${gp}.`);

  // bad base64url, each over an otherwise good token: a signature that holds
  // both '-' and '_' (ECDSA is randomized: sign until one does)
  let b = good;
  while (!/-/.test(parts(b)[2]) || !/_/.test(parts(b)[2])) b = await jwt(claims(), vh(), victim.privateKey);
  const [bh, bp, bs] = parts(b);
  put('b64-padding', `${bh}.${bp}.${bs}==`); // 64 bytes: 86 characters, 2 of padding
  put('b64-plus', `${bh}.${bp}.${bs.replace(/-/g, '+')}`);
  put('b64-slash', `${bh}.${bp}.${bs.replace(/_/g, '/')}`);
  put('b64-space', `${bh}.${bp.slice(0, 10)} ${bp.slice(10)}.${bs}`);
  put('b64-newline', `${bh}.${bp.slice(0, 10)}\n${bp.slice(10)}.${bs}`);
  // the last of 86 characters carries 2 bits of the 64 bytes and 4 that must be zero
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(bs[bs.length - 1]);
  put('b64-noncanonical', `${bh}.${bp}.${bs.slice(0, -1)}${alphabet[last | 1]}`);
  put('b64-sig-65', `${bh}.${bp}.${bs}A`); // 87 characters: 65 bytes, not 64
  put('b64-length-mod4-1', `${bh}.${bp}.${bs}AAA`); // 89 characters: no base64 length
  put('b64-header-padding', `${b64u(JSON.stringify(vh()))}=.${bp}.${bs}`);

  // size: a token over 64 KiB signed by the victim
  put('oversized', await sized(false));
  put('oversized-large', await jwt(claims({ pad: 'a'.repeat(200000) }), vh(), victim.privateKey));

  // keys offered by the token itself
  put('jwk-attacker', await jwt(claims(), { alg: 'ES256', typ: 'JWT', jwk: attacker.bare }, attacker.privateKey));
  put('jwk-attacker-kid', await jwt(claims(), { alg: 'ES256', typ: 'JWT', kid: attacker.kid, jwk: attacker.bare }, attacker.privateKey));
  put('jwk-attacker-victim-kid', await jwt(claims(), { alg: 'ES256', typ: 'JWT', kid: victim.kid, jwk: attacker.bare }, attacker.privateKey));
  put('jwk-victim-signed', await jwt(claims(), { ...vh(), jwk: victim.bare }, victim.privateKey));
  put('jku-attacker', await jwt(claims(), { alg: 'ES256', typ: 'JWT', kid: attacker.kid, jku: 'https://attacker.example/jwks' }, attacker.privateKey));
  put('jku-victim-signed', await jwt(claims(), { ...vh(), jku: 'https://attacker.example/jwks' }, victim.privateKey));
  put('x5u-attacker', await jwt(claims(), { alg: 'ES256', typ: 'JWT', kid: attacker.kid, x5u: 'https://attacker.example/cert.pem' }, attacker.privateKey));
  put('x5u-victim-signed', await jwt(claims(), { ...vh(), x5u: 'https://attacker.example/cert.pem' }, victim.privateKey));
  put('kid-unknown', await jwt(claims(), { alg: 'ES256', typ: 'JWT', kid: attacker.kid }, attacker.privateKey));
  put('kid-unknown-nokid', await jwt(claims(), { alg: 'ES256', typ: 'JWT' }, attacker.privateKey));
  put('kid-not-string', handSign(JSON.stringify({ alg: 'ES256', kid: [victim.kid] }), JSON.stringify(claims()), victim.privateKey, 'ES256'));

  // crit (jose signs it only when told it understands the extension)
  put('crit', await jwt(claims(), { ...vh(), crit: ['urn:x'], 'urn:x': 1 }, victim.privateKey, { crit: { 'urn:x': true } }));
  put('crit-exp', handSign(JSON.stringify({ ...vh(), crit: ['exp'], exp: now + 300 }), JSON.stringify(claims()), victim.privateKey, 'ES256'));

  // duplicate members (JSON.stringify cannot make them: by hand), validly signed
  const hdr = `{"alg":"ES256","kid":"${victim.kid}","typ":"JWT"`;
  put('dup-header-alg', handSign(`{"alg":"HS256",${hdr.slice(1)}}`, JSON.stringify(claims()), victim.privateKey, 'ES256'));
  put('dup-header-alg-same', handSign(`${hdr},"alg":"ES256"}`, JSON.stringify(claims()), victim.privateKey, 'ES256'));
  put('dup-header-kid', handSign(`${hdr},"kid":"${attacker.kid}"}`, JSON.stringify(claims()), victim.privateKey, 'ES256'));
  const c = claims();
  put('dup-claims-aud', handSign(JSON.stringify(vh()), `{"aud":"https://evil.example/token",${JSON.stringify(c).slice(1)}`, victim.privateKey, 'ES256'));

  // not JSON objects where objects belong
  put('header-array', handSign(JSON.stringify([vh()]), JSON.stringify(claims()), victim.privateKey, 'ES256'));
  put('header-not-json', handSign(`${hdr}`, JSON.stringify(claims()), victim.privateKey, 'ES256'));
  put('payload-array', handSign(JSON.stringify(vh()), JSON.stringify([claims()]), victim.privateKey, 'ES256'));
  put('payload-trailing', handSign(JSON.stringify(vh()), `${JSON.stringify(claims())} {}`, victim.privateKey, 'ES256'));

  // structure
  put('truncated', good.slice(0, good.length - 20));
  put('truncated-at-dot', `${gh}.${gp}`);
  put('one-dot', `${gh}.${gp}${gs}`);
  put('no-dots', `${gh}${gp}${gs}`);
  put('four-parts', `${gh}.${gp}.${gs}.${gs}`);
  put('jwe-shape', `${gh}.${gp}.${gs}.${gs}.${gs}`);
  put('empty', '');
  put('header-empty', `.${gp}.${gs}`);
  writeFileSync(`${out}/cases`, `${cases.join('\n')}\n`);
  console.log(`${cases.length} tokens in ${out}`);
}

const [cmd, ...rest] = process.argv.slice(2);
const commands = { verify, 'verify-batch': verifyBatch, sign: signCmd, jwk: jwkCmd, corpus };
if (!commands[cmd]) usage('verify|verify-batch|sign|jwk|corpus ...');
try {
  await commands[cmd](rest);
} catch (err) {
  console.log(`rejected: ${err.code ? `${err.code}: ` : ''}${err.message}`);
  process.exit(1);
}
