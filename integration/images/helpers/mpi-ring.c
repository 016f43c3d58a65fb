/* The MPI program of the `mpi` test image, built against Debian's MPICH.
 * Each rank prints its rank, the world size, an MPI_Allreduce across every
 * rank, its node, and which files its MPI library and C library were mapped
 * from (/proc/self/maps), so a test sees which libmpich and which glibc ran. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

/* The file of the first mapping whose name contains `needle`, or "none". */
static void mapped(const char *needle, char *out, size_t len) {
    char line[4096];
    FILE *f = fopen("/proc/self/maps", "r");
    snprintf(out, len, "none");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        char *path = strchr(line, '/');
        if (path && strstr(path, needle)) {
            path[strcspn(path, "\n")] = 0;
            snprintf(out, len, "%s", path);
            break;
        }
    }
    fclose(f);
}

int main(int argc, char **argv) {
    int rank, size, len, sum = 0, one = 1;
    char name[MPI_MAX_PROCESSOR_NAME], mpi[4096], libc[4096];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(name, &len);
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    mapped("/libmpich.so", mpi, sizeof mpi);
    mapped("/libc.so.6", libc, sizeof libc);
    printf("RANK %d SIZE %d SUM %d HOST %s MPI %s LIBC %s\n", rank, size, sum, name, mpi, libc);
    MPI_Finalize();
    return 0;
}
