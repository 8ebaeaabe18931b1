// webauthn-verify.mjs - an independent WebAuthn verifier for tests/attest.sh:
// @simplewebauthn/server's verifyRegistrationResponse, with ROOT (PEM) as the
// only TPM root (SettingsService), over a RegistrationResponseJSON.
// usage: node webauthn-verify.mjs RESPONSE.json ROOT.pem CHALLENGE_B64U ORIGIN RP_ID
// Prints "verified FMT" and exits 0, or "rejected: WHY" and exits 1.
// The package is looked up in $KV_NPM_DIR (default /var/cache/libkeyvault-npm),
// where tests/install-deps.sh puts it.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const [responsePath, rootPath, challenge, origin, rpID] = process.argv.slice(2);
if (!rpID) {
  console.error('usage: webauthn-verify.mjs RESPONSE.json ROOT.pem CHALLENGE ORIGIN RP_ID');
  process.exit(2);
}
const dir = process.env.KV_NPM_DIR || '/var/cache/libkeyvault-npm';
const require = createRequire(`${dir}/node_modules/`);
const { verifyRegistrationResponse, SettingsService } = require('@simplewebauthn/server');

// One correction to the verifier, not to its checks: 9.0.3 (the last
// release that runs on Debian 12's node 18) turns an ECDSA signature from
// DER into r||s without padding an r or s that DER encodes shorter than the
// curve's size (about one signature in 128), so WebCrypto then rejects a
// valid signature ("invalid signature"); 10.x pads them. This does the same
// here: r and s each padded to the curve's size, read from the longer of them.
const unwrap = require(`${dir}/node_modules/@simplewebauthn/server/script/helpers/iso/isoCrypto/unwrapEC2Signature.js`);
const { AsnParser, ECDSASigValue } = require(`${dir}/node_modules/@simplewebauthn/server/script/deps.js`);
unwrap.unwrapEC2Signature = (signature) => {
  const sig = AsnParser.parse(signature, ECDSASigValue);
  const strip = (b) => { let i = 0; while (i < b.length - 1 && b[i] === 0) i++; return b.slice(i); };
  const r = strip(new Uint8Array(sig.r));
  const s = strip(new Uint8Array(sig.s));
  const size = [32, 48, 66].find((n) => n >= Math.max(r.length, s.length));
  if (!size) throw new Error('ECDSA signature: r or s longer than P-521 allows');
  const out = new Uint8Array(2 * size);
  out.set(r, size - r.length);
  out.set(s, 2 * size - s.length);
  return out;
};

SettingsService.setRootCertificates({
  identifier: 'tpm',
  certificates: [readFileSync(rootPath, 'utf8')],
});
try {
  const result = await verifyRegistrationResponse({
    response: JSON.parse(readFileSync(responsePath, 'utf8')),
    expectedChallenge: challenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    requireUserVerification: false,
  });
  if (!result.verified) {
    console.log('rejected: not verified');
    process.exit(1);
  }
  console.log(`verified ${result.registrationInfo.fmt}`);
} catch (err) {
  console.log(`rejected: ${err.message}`);
  process.exit(1);
}
