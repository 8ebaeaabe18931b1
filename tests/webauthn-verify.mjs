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
