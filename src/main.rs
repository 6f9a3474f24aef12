fn main() {
    std::process::exit(meridian::cli::main());
}
