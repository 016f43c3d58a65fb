//! The SPANK plugin Slurm loads through plugstack.conf.
