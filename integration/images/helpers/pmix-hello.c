/* A PMIx client for the `mpi` test image (libpmix from Debian's libpmix-dev):
 * connects to the PMIx server of Slurm's slurmstepd (srun --mpi=pmix), reads
 * its rank and the job size, and joins a fence with every other rank, which
 * completes only when the servers of all nodes of the step exchange. It also
 * says whether the job's PMIX_NSDIR (where MPI libraries put their per-job
 * session files) is a directory it can see. */
#include <pmix.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    pmix_proc_t me, job;
    pmix_value_t *val = NULL, *nsdir = NULL;
    struct stat st;
    const char *nsdir_state = "unset";
    char host[256] = "unknown";
    pmix_status_t rc = PMIx_Init(&me, NULL, 0);
    if (rc != PMIX_SUCCESS) {
        fprintf(stderr, "PMIx_Init: %s\n", PMIx_Error_string(rc));
        return 1;
    }
    PMIX_PROC_CONSTRUCT(&job);
    PMIX_LOAD_PROCID(&job, me.nspace, PMIX_RANK_WILDCARD);
    rc = PMIx_Get(&job, PMIX_JOB_SIZE, NULL, 0, &val);
    if (rc != PMIX_SUCCESS) {
        fprintf(stderr, "PMIx_Get(PMIX_JOB_SIZE): %s\n", PMIx_Error_string(rc));
        return 1;
    }
    if (PMIx_Get(&job, PMIX_NSDIR, NULL, 0, &nsdir) == PMIX_SUCCESS && nsdir->type == PMIX_STRING)
        nsdir_state = stat(nsdir->data.string, &st) == 0 && S_ISDIR(st.st_mode) ? "dir" : "missing";
    rc = PMIx_Fence(NULL, 0, NULL, 0);
    if (rc != PMIX_SUCCESS) {
        fprintf(stderr, "PMIx_Fence: %s\n", PMIx_Error_string(rc));
        return 1;
    }
    gethostname(host, sizeof host - 1);
    printf("PMIX RANK %u SIZE %u NSPACE %s HOST %s NSDIR %s\n", me.rank, val->data.uint32, me.nspace,
           host, nsdir_state);
    PMIX_VALUE_RELEASE(val);
    if (nsdir)
        PMIX_VALUE_RELEASE(nsdir);
    PMIx_Finalize(NULL, 0);
    return 0;
}
