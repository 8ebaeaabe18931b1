/*
 * config.c - libFuzzer target for the configuration file (kv_ctx_new on a
 * written file): the INI reader and every section's checks ([keyvault],
 * [software], [pkcs11], [tpm], [x509], [lifecycle], [audit] and the
 * context [policy]).
 *
 * Input: the file's text; "@D@" stands for the target's scratch directory,
 * so seeds name paths that exist wherever the target runs. Run it in a
 * scratch working directory (run.sh does): a configuration that the
 * library accepts may create its store, home or audit log where it says.
 * May accept: any configuration the library takes is a valid one (no check
 * beyond no crash, no leak); a context it makes must free cleanly.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static char conf[512];

static const char *const seeds[] = {
    "[keyvault]\nbackends = software\nhome = @D@/home\n[software]\nstore = @D@/store\n"
    "passphrase = file:@D@/pass\nkdf_iterations = 1000\n",
    "[keyvault]\nbackends = tpm, pkcs11, software\nrequire_hardware = false\nhome = @D@/home\n"
    "[software]\nstore = @D@/store\npassphrase = machine\nkdf_iterations = 100000\n"
    "[x509]\nrenew_threshold = 67%\n[lifecycle]\noverlap = 7d\ngrace = 30d\n"
    "[pkcs11]\nmodule = /nonexistent/module.so\ntoken = gw\npin = env:KV_FUZZ_PIN\n"
    "[tpm]\ntcti = none\nkeys = @D@/tpmkeys\n",
    "[keyvault]\nbackends = software\nhome = @D@/home\n[software]\nstore = @D@/store\n"
    "passphrase = file:@D@/pass\n[policy]\nkeys = gw-*, web\nbackends = tpm, pkcs11\n"
    "uses = sign, attest\nmanage = false\n",
    "[keyvault]\nbackends = software\nhome = @D@/home\n[software]\nstore = @D@/store\n"
    "passphrase = file:@D@/pass\n[audit]\nfile = @D@/audit.log\nseal_key = audit-seal\n"
    "seal_every = 1000\nflush = buffered          # or record\nflush_ms = 200\nsyslog = false\n",
    "; comment\n# comment\n[keyvault]\nbackends=software\n\n[software]\n  store =  @D@/store  \n"
    "passphrase = machine:@D@/secret\n",
    "[keyvault]\nbackends = software\nrequire_hardware = true\n",
    "[keyvault]\nbackends = software, software\n",
    "[keyvault\nbackends = software\n",
    "[keyvault]\nbackends\n",
    "[software]\nkdf_iterations = 99999999999999999999\n",
    "[lifecycle]\noverlap = -1d\ngrace = 1y\n",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char pass[512];

    (void)argc;
    (void)argv;
    fz_write(fz_path(pass, sizeof(pass), "pass"), "fuzz store passphrase\n", 22);
    if (chmod(pass, 0600) != 0)
        abort();
    fz_path(conf, sizeof(conf), "fuzz.conf");
    if (fz_seeding()) {
        fz_seed_texts(seeds, sizeof(seeds) / sizeof(seeds[0]));
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *raw = fz_str(data, size), *text = fz_subst(raw);
    kv_ctx *ctx = NULL;
    kv_rc rc;

    fz_write(conf, text, strlen(text));
    rc = kv_ctx_new(&ctx, conf);
    if (rc == KV_OK) {
        size_t i = 0;
        const char *name;
        int available;
        /* every backend the context reports has a name */
        while (kv_ctx_backend(ctx, i++, &name, &available, NULL) == KV_OK)
            FZ_ASSERT(name && *name, "a backend without a name");
    }
    kv_ctx_free(ctx);
    free(text);
    free(raw);
    return 0;
}
