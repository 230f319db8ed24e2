use clap::Args;
use iqd::config::PROFILES;

/// List the built-in server profiles: interfaces (NICs an LPAR of the profile may have) and
/// the bandwidth its NICs share per direction.
///
/// An LPAR names one with `profile = "..."` in the fabric file; `bandwidth = "..."` overrides
/// the profile's bandwidth. As the LinuxONE bare metal offering lists them.
#[derive(Args, Debug)]
pub struct Profiles {
    /// Print JSON: [{"name":..,"interfaces":..,"bandwidth":..}].
    #[arg(long)]
    json: bool,
}

impl Profiles {
    pub fn run(&self) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&PROFILES)?);
            return Ok(());
        }
        println!("{:<20} {:>10}  BANDWIDTH", "PROFILE", "INTERFACES");
        for p in PROFILES {
            println!("{:<20} {:>10}  {}", p.name, p.interfaces, p.bandwidth);
        }
        Ok(())
    }
}
