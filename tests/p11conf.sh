# p11conf.sh - source it for p11_write_conf, which writes
# "$KV_P11_DIR/keyvault.conf" (pkcs11 then software) for the token a harness
# made: KV_P11_MODULE, KV_P11_TOKEN, KV_P11_PINFILE, and KV_P11_INIT_ARGS
# when the module needs C_Initialize arguments. Used by tests/softokn.sh and
# tests/tpm2pkcs11.sh.
p11_write_conf() {
    {
        printf '[keyvault]\nbackends = pkcs11, software\n\n[pkcs11]\nmodule = %s\n' "$KV_P11_MODULE"
        [ -n "${KV_P11_INIT_ARGS:-}" ] && printf 'init_args = %s\n' "$KV_P11_INIT_ARGS"
        printf 'token = %s\npin = file:%s\n\n' "$KV_P11_TOKEN" "$KV_P11_PINFILE"
        printf '[software]\nstore = %s/soft\npassphrase = file:%s\nkdf_iterations = 1000\n' \
            "$KV_P11_DIR" "$KV_P11_PINFILE"
    } >"$KV_P11_DIR/keyvault.conf"
}
