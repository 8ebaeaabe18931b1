# plot.gp - throughput against threads, libkeyvault (solid) and the raw
# backend (dashed), for sign-ec-p256 on each backend. Called by run.sh.
set terminal pngcairo size 900,560 font ",10" noenhanced
set output outfile
set title "ECDSA P-256 sign: libkeyvault (solid) and raw backend (dashed)"
set xlabel "threads"
set ylabel "operations per second"
set logscale y
set xtics (1, 2, 4, 8)
set key outside right
set grid
plot \
  "< grep '^software sign-ec-p256 ' ".datafile using 3:4 with linespoints lw 2 lc 1 title "software", \
  "< grep '^software sign-ec-p256 ' ".datafile using 3:5 with linespoints lw 1 dt 2 lc 1 title "OpenSSL", \
  "< grep '^pkcs11 sign-ec-p256 ' ".datafile using 3:4 with linespoints lw 2 lc 2 title "pkcs11 (SoftHSM)", \
  "< grep '^pkcs11 sign-ec-p256 ' ".datafile using 3:5 with linespoints lw 1 dt 2 lc 2 title "raw C_Sign", \
  "< grep '^tpm sign-ec-p256 ' ".datafile using 3:4 with linespoints lw 2 lc 3 title "tpm (swtpm)", \
  "< grep '^tpm sign-ec-p256 ' ".datafile using 3:5 with linespoints lw 1 dt 2 lc 3 title "raw Esys_Sign"
