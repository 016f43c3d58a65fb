//! The image gateway service.

fn main() {
    eprintln!("shifter-imagegw: not implemented yet");
    std::process::exit(2);
}
