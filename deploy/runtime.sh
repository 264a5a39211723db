# Which TFLite runtime deploy/install.sh puts into the venv (sourced by install.sh; the table is
# tested by tests/test_systemd_unit.py and the arm64 rehearsal; docs/deploy.md explains it).
#
#   runtime_plan PLATFORM MACHINE PYVER
#
# prints "BACKEND EXTRAS REQUIREMENT" (a "-" for an empty field):
#   BACKEND      runtime.backend for a new config (- : auto)
#   EXTRAS       edgepose's extras ([tflite] pulls tflite-runtime 2.14 and numpy<2)
#   REQUIREMENT  an extra pip requirement installed beside edgepose
#
# LiteRT (ai-edge-litert) 1.4.x is the runtime on a Raspberry Pi and a Jetson: its XNNPACK runs
# int8 models (tflite-runtime 2.14's has no int8 kernels: 18-40x slower), it needs only
# numpy>=1.23.2 (so it lives beside apt's numpy 1.x and picamera2), and it ships aarch64 wheels
# for CPython 3.9 to 3.12 (manylinux_2_17). LiteRT 2.x is not used there: 2.3.0 crashed in
# allocate_tensors under qemu-aarch64 while 1.4.0 runs.  Where no LiteRT 1.4 wheel exists (32-bit
# Raspberry Pi OS, Python 3.13), the Pi falls back to tflite-runtime 2.14, which PyPI has for
# aarch64 CPython 3.9/3.11 only: elsewhere its wheel must come from your own index or --from DIR.
runtime_plan() {
    local platform=$1 machine=$2 pyver=$3 minor
    minor=${pyver#3.}
    local litert_wheel=0
    if [ "$machine" = aarch64 ] && [ "${pyver%%.*}" = 3 ] && [ "$minor" -ge 9 ] && [ "$minor" -le 12 ]; then
        litert_wheel=1
    fi
    case "$platform" in
        pi)
            if [ "$litert_wheel" = 1 ]; then echo "litert - ai-edge-litert>=1.4,<1.5"
            else echo "tflite-runtime [tflite] -"; fi ;;
        jetson)
            if [ "$litert_wheel" = 1 ]; then echo "litert - ai-edge-litert>=1.4,<1.5"
            else echo "- - -"; fi ;;
        *) echo "- - -" ;;
    esac
}
