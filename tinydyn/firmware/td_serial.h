/* What a serial board (boards/<name>/) supplies to td_server.c besides td_board.h's counter:
 * its identity, an energy figure and a blocking UART write. */
#ifndef TD_SERIAL_H
#define TD_SERIAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;    /* reported in INFO, at most 32 characters */
    uint32_t clock_hz;   /* core clock (0 if meaningless, e.g. the host board) */
    uint8_t energy_kind; /* TD_ENERGY_* (protocol.h): what td_serial_energy reports */
} td_serial_board_t;

extern const td_serial_board_t td_serial_board;

/* Energy (nJ) and mean power (uW) of the inference just run, from a sensor (TD_ENERGY_MEASURED)
 * or an energy model (TD_ENERGY_MODELLED); zeros for TD_ENERGY_NONE. counter is in the unit
 * RESULT reports (cycles or instructions). */
void td_serial_energy(uint32_t macs, uint32_t counter, uint32_t *energy_nj, uint32_t *power_uw);

#ifdef TD_SERIAL_RUNTIME_ENERGY_KIND
/* Boards built with -DTD_SERIAL_RUNTIME_ENERGY_KIND: the TD_ENERGY_* kind in force, decided at
 * run time (e.g. MEASURED once the power monitor answered, else MODELLED); INFO and RESULT report
 * it instead of td_serial_board.energy_kind. */
uint8_t td_serial_energy_kind(void);
#endif

/* Send bytes to the host; returns when they are queued or sent. */
void td_serial_write(const uint8_t *data, size_t n);

#endif /* TD_SERIAL_H */
