#!/usr/bin/env bash
# bench/engine/plot.sh — PNG plots of results/itl-*.csv and state with
# gnuplot (Debian: gnuplot-nox): latency vs context, state vs context.
set -euo pipefail
cd "$(dirname "$0")/results"
for p in tiny small paper; do
  ls itl-$p*.csv >/dev/null 2>&1 || continue
  # every itl CSV of the preset (extra runs such as itl-small-1m.csv too)
  for a in tconstformer transformer; do
    awk -F, -v a=$a 'FNR>1 && $2==a && $5!="" {print $3, $5, $8, $9}' itl-$p*.csv | sort -n -u -k1,1 > itl-$p-$a.dat
  done
done
gnuplot <<'GP'
set terminal pngcairo size 1100,560 noenhanced
set logscale xy
set xlabel "context N (tokens)"
set grid
set key outside right
set output "latency-vs-context.png"
set ylabel "ms per token"
set title "hit-step p50 and amortized per-token cost vs context (2-core shared VM)"
files = "tiny small paper"
plot for [p in files] for [a in "tconstformer transformer"] \
       (system("test -s itl-".p."-".a.".dat && echo 1 || echo 0") eq "1" ? "itl-".p."-".a.".dat" : "/dev/null") \
       using 1:2 with linespoints title p." ".a." hit p50", \
     for [p in files] (system("test -s itl-".p."-tconstformer.dat && echo 1 || echo 0") eq "1" ? "itl-".p."-tconstformer.dat" : "/dev/null") \
       using 1:3 with lines dashtype 2 title p." tconstformer amortized"
set output "state-vs-context.png"
set ylabel "session state bytes (token history excluded)"
set title "session state vs context"
plot for [p in files] for [a in "tconstformer transformer"] \
       (system("test -s itl-".p."-".a.".dat && echo 1 || echo 0") eq "1" ? "itl-".p."-".a.".dat" : "/dev/null") \
       using 1:4 with linespoints title p." ".a
GP
rm -f itl-*-*.dat
