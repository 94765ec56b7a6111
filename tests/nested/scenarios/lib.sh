# Shared by the benchmark scenarios (sourced, not a scenario of its own).

# Prints the words after the first rotated left by $1 (round 1 keeps the order).
rotate() {
    n=$(($1 - 1))
    shift
    n=$((n % $#))
    while [ "$n" -gt 0 ]; do
        first=$1
        shift
        set -- "$@" "$first"
        n=$((n - 1))
    done
    echo "$@"
}
