/* A PMIx client for the `mpi` test image (libpmix from Debian's libpmix-dev):
 * connects to the PMIx server of Slurm's slurmstepd (srun --mpi=pmix), reads
 * its rank and the job size, and joins a fence with every other rank, which
 * completes only when the servers of all nodes of the step exchange. */
#include <pmix.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    pmix_proc_t me, job;
    pmix_value_t *val = NULL;
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
    rc = PMIx_Fence(NULL, 0, NULL, 0);
    if (rc != PMIX_SUCCESS) {
        fprintf(stderr, "PMIx_Fence: %s\n", PMIx_Error_string(rc));
        return 1;
    }
    gethostname(host, sizeof host - 1);
    printf("PMIX RANK %u SIZE %u NSPACE %s HOST %s\n", me.rank, val->data.uint32, me.nspace, host);
    PMIX_VALUE_RELEASE(val);
    PMIx_Finalize(NULL, 0);
    return 0;
}
