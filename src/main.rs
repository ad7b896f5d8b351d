fn main() {
    seedpool::cli::main()
}
